// Drives the example staff inbox page (examples/browser) in headless Chromium, through its UI
// only, as a person would: playwright-core steers the system's Chromium (no downloaded browser).
// Prints one JSON line per step with what the page shows then; `{"log": …}` lines carry the
// page's console and errors. Every wait is for something the page shows (or its error line),
// never for a fixed time.
// Prints `{"step": "done"}` once Chromium has closed, `{"step": "failed", error}` on any failure.
// Usage: OMEGA_NODE_MODULES=examples/browser/node_modules node drive.js '<json settings>'
//   settings: { scenario: "journey" | "refusals", chromium, page, foreign_page, envoy, key,
//               business_id, staff_id, conversation_id, note, live_text, timeout_ms }
const path = require("path");
const { chromium } = require(path.resolve(process.env.OMEGA_NODE_MODULES, "playwright-core"));

const settings = JSON.parse(process.argv[2]);
const timeout = settings.timeout_ms;
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

// What the page shows: its error line, the conversations, the messages, the live events.
async function shown(page) {
  return page.evaluate(() => {
    const texts = (selector) => [...document.querySelectorAll(selector)].map((e) => e.textContent);
    return {
      error: document.getElementById("error").textContent,
      conversations: [...document.querySelectorAll("#conversations li")].map((li) => ({
        id: Number(li.dataset.conversationId),
        text: li.textContent,
      })),
      messages: texts("#messages li"),
      notes: texts("#messages li.NOTE"),
      events: [...document.querySelectorAll("#events li")].map((li) => li.dataset.kind),
      live: document.getElementById("live-status").textContent,
    };
  });
}

// Waits until `condition` (run in the page) holds or the page shows an error.
async function until(page, condition, arg) {
  await page.waitForFunction(
    ([condition, arg]) => document.getElementById("error").textContent !== "" || new Function("arg", condition)(arg),
    [condition, arg],
    { timeout, polling: 100 },
  );
}

// Once signed in, the page ends by listing conversations or showing its error.
const listed = "return document.querySelector('#conversations li') !== null";

async function signIn(page, url, key) {
  await page.goto(url, { timeout });
  await page.fill("#envoy-url", settings.envoy);
  await page.fill("#api-key", key);
  await page.fill("#business-id", String(settings.business_id));
  await page.fill("#staff-id", String(settings.staff_id));
  await page.click("#load");
}

async function journey(browser) {
  const page = await browser.newPage();
  watch(page);
  await signIn(page, settings.page, settings.key);
  await until(page, listed);
  print({ step: "inbox", ...(await shown(page)) });

  await page.click(`#conversations li[data-conversation-id="${settings.conversation_id}"] button`);
  await until(page, "return document.querySelector('#messages li') !== null");
  print({ step: "conversation", ...(await shown(page)) });

  await page.fill("#note-content", settings.note);
  await page.click("#add-note");
  await until(page, "return [...document.querySelectorAll('#messages li.NOTE')].some((li) => li.textContent.includes(arg))", settings.note);
  print({ step: "note", ...(await shown(page)) });

  // The stream has answered once it shows "following"; the test then makes a change elsewhere.
  await until(page, "return document.getElementById('live-status').textContent === 'following'");
  print({ step: "following", ...(await shown(page)) });

  await until(page, "return [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes(arg))", settings.live_text);
  print({ step: "live", ...(await shown(page)) });
}

async function refusals(browser) {
  // A wrong key on the allowed origin: the call reaches Omega and is refused.
  const page = await browser.newPage();
  watch(page);
  await signIn(page, settings.page, settings.key + "x");
  await until(page, listed);
  print({ step: "wrong-key", ...(await shown(page)) });

  // The right key from an origin OMEGA_CORS_ALLOWED_ORIGINS does not name: the browser itself
  // refuses to let the page read the answer.
  const foreign = await browser.newPage();
  watch(foreign);
  await signIn(foreign, settings.foreign_page, settings.key);
  await until(foreign, listed);
  print({ step: "foreign-origin", ...(await shown(foreign)) });
}

function watch(page) {
  page.on("console", (m) => print({ log: `console.${m.type()}: ${m.text()}` }));
  page.on("pageerror", (e) => print({ log: `pageerror: ${e.message}` }));
}

(async () => {
  const browser = await chromium.launch({
    executablePath: settings.chromium,
    headless: true,
    timeout,
    // A closed network: no background, component or sync traffic, no QUIC.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    await { journey, refusals }[settings.scenario](browser);
  } finally {
    await browser.close();
  }
  print({ step: "done" });
})().catch((e) => {
  print({ step: "failed", error: String(e && e.stack || e) });
  process.exit(1);
});
