// A chat widget's live connection, as Chatwoot's widget makes it: the real @rails/actioncable
// client (with `ws` as its WebSocket on Node), subscribed to RoomChannel with a pubsub token.
// Prints one JSON line per thing seen: frames' types (welcome, ping, disconnect), the
// subscription's callbacks (connected, rejected, disconnected) and each message received.
// Usage: OMEGA_NODE_MODULES=.tools/node_modules node client.js ws://host/cable PUBSUB_TOKEN
const path = require("path");
const modules = process.env.OMEGA_NODE_MODULES;
const ActionCable = require(path.join(modules, "@rails/actioncable"));
const WebSocket = require(path.join(modules, "ws"));

// The browser globals the library touches, and no more.
globalThis.addEventListener = () => {};
globalThis.removeEventListener = () => {};
ActionCable.adapters.WebSocket = WebSocket;

const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const events = ActionCable.Connection.prototype.events;
const onMessage = events.message;
events.message = function (event) {
  const { type } = JSON.parse(event.data);
  if (type === "welcome" || type === "ping" || type === "disconnect") print({ frame: type, protocol: this.getProtocol() });
  return onMessage.call(this, event);
};

const [url, token] = process.argv.slice(2);
const consumer = ActionCable.createConsumer(url);
consumer.subscriptions.create(
  { channel: "RoomChannel", pubsub_token: token },
  {
    connected() { print({ callback: "connected" }); },
    rejected() { print({ callback: "rejected" }); },
    disconnected() { print({ callback: "disconnected" }); },
    received(data) { print({ callback: "received", data }); },
  },
);
// The test ends the client by closing its standard input.
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
