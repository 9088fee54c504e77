-- Omega's REST edge, run by Envoy's Lua filter between gRPC-Web and the JSON transcoder.
--
-- Requests: REST lives under the public base path /omega (and the Chatwoot-compatible API under
-- /public/api/v1). The protos' google.api.http paths have no /omega, so it is stripped here,
-- before the transcoder matches; the public path is kept in x-omega-public-path, because
-- provider signatures (Twilio) are computed over the URL the provider called. gRPC and gRPC-Web
-- calls (/omega.v1.Service/Method) pass untouched. Anything else is a JSON 404. A body sent to a
-- JSON endpoint must say it is JSON: anything else (a form post, text/plain, no content type) is a
-- 415, so that a page on another site cannot post a JSON-looking form body. Provider webhooks
-- take their bodies raw (google.api.HttpBody); their paths come from the protos. A known path
-- called with a method it lacks is a 405 with Allow, and a single value given for a repeated
-- field of a JSON body is refused (the transcoder would read it as a list of one): the routes,
-- methods and repeated fields are rendered from the protos' google.api.http annotations.
--
-- Responses: Omega decides a failed REST call's HTTP status (its one table of errors, in
-- src/api/error.rs) and sends it in x-omega-http-status; it becomes the answer's :status here
-- (INVALID_ARGUMENT is a 422 Parameter Error, FAILED_PRECONDITION a 409, …). That header and
-- leftover grpc-* headers are dropped from REST answers.

local function starts_with(s, prefix)
  return string.sub(s, 1, #prefix) == prefix
end

-- Lua patterns of the /omega paths (without /omega) whose body is raw; rendered from the protos.
local RAW_BODY_PATHS = {{RAW_BODY_PATHS}}

local function raw_body(path)
  path = string.gsub(path, "?.*", "")
  for _, pattern in ipairs(RAW_BODY_PATHS) do
    if string.find(path, pattern) then
      return true
    end
  end
  return false
end

-- Every REST binding, rendered from the protos: { Lua pattern of the path, method, the names of
-- the repeated fields in its JSON body }.
local ROUTES = {{ROUTES}}

-- The literal first segment of a route's pattern ("^/api%-keys$" → "api-keys"), or nil when
-- it is not literal (a pattern class such as "[^/]*").
local function literal_first_segment(pattern)
  local first = string.match(pattern, "^%^/([^/]*)")
  if first == nil then
    return nil
  end
  first = string.gsub(first, "%$$", "")
  if string.find(string.gsub(first, "%%.", ""), "[%^%$%(%)%.%[%]%*%+%-%?%%]") then
    return nil
  end
  return (string.gsub(first, "%%(.)", "%1"))
end

-- The routes by their first segment, so that a request tries the few that can match it (with
-- every route each request tried ~90 patterns: about a tenth of Envoy's time per REST call).
local ROUTES_BY_FIRST, ROUTES_ANY_FIRST = {}, {}
for _, route in ipairs(ROUTES) do
  local first = literal_first_segment(route[1])
  if first == nil then
    ROUTES_ANY_FIRST[#ROUTES_ANY_FIRST + 1] = route
  else
    ROUTES_BY_FIRST[first] = ROUTES_BY_FIRST[first] or {}
    table.insert(ROUTES_BY_FIRST[first], route)
  end
end

-- The bindings of `path` (no query): the one for `method`, if any, and (when there is none)
-- the methods the path has.
local function route_of(path, method)
  local found, allowed, listed = nil, {}, {}
  local function try(routes)
    for _, route in ipairs(routes) do
      if string.find(path, route[1]) then
        if route[2] == method then
          found = route
        end
        if not listed[route[2]] then
          listed[route[2]] = true
          allowed[#allowed + 1] = route[2]
        end
      end
    end
  end
  try(ROUTES_BY_FIRST[string.match(path, "^/([^/]*)")] or {})
  try(ROUTES_ANY_FIRST)
  if found == nil then
    table.sort(allowed)
  end
  return found, allowed
end

-- The first of `names` that `body` gives a single value rather than a list (or null). proto3
-- JSON needs an array; the transcoder would read a scalar as a list of one. A name in quotes
-- followed by a colon is a key: inside a JSON string every quote is escaped.
local function scalar_for_list(body, names)
  for _, name in ipairs(names) do
    local at = 1
    while true do
      local _, stop = string.find(body, '"' .. name .. '"%s*:%s*', at)
      if stop == nil then
        break
      end
      local next = string.sub(body, stop + 1, stop + 1)
      if next ~= "[" and next ~= "n" then
        return name
      end
      at = stop + 1
    end
  end
  return nil
end

local function has_body(headers)
  local length = headers:get("content-length")
  return (length ~= nil and length ~= "0") or headers:get("transfer-encoding") ~= nil
end

local function is_json(content_type)
  local media = string.lower(string.match(content_type, "^[^;]*"))
  media = string.gsub(media, "%s", "")
  return media == "application/json" or (starts_with(media, "application/") and string.sub(media, -5) == "+json")
end

-- Chatwoot's clients join a base URL ending in "/" with "/public/api/v1/…". Slashes are merged
-- on the Chatwoot paths only: on /omega an empty id (`/businesses//clients`) stays a 422.
local function merged_public_path(headers, path)
  if not string.find(path, "//", 1, true) then
    return path
  end
  local route, query = string.match(path, "^([^?]*)(.*)$")
  local merged = string.gsub(route, "/+", "/")
  if not starts_with(merged, "/public/api/v1/") then
    return path
  end
  merged = merged .. query
  headers:replace(":path", merged)
  return merged
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if starts_with(content_type, "application/grpc") then
    return
  end
  local path = headers:get(":path") or "/"
  headers:replace("x-omega-public-path", path)
  path = merged_public_path(headers, path)
  local rest = path
  local omega = path == "/omega" or starts_with(path, "/omega/") or starts_with(path, "/omega?")
  if omega then
    rest = string.sub(path, 7)
    if rest == "" or starts_with(rest, "?") then
      rest = "/" .. rest
    end
  elseif not starts_with(path, "/public/api/v1/") then
    -- Envoy's local_reply_config wraps these texts into the JSON error shape.
    handle:respond({ [":status"] = "404" }, "no such endpoint; the REST API lives under /omega")
    return
  end
  local method = headers:get(":method")
  local bare = string.match(rest, "^[^?]*")
  local route, allowed = route_of(bare, method)
  if route == nil and #allowed > 0 then
    local allow = table.concat(allowed, ", ")
    handle:respond({ [":status"] = "405", ["allow"] = allow },
      "method " .. method .. " is not allowed on this path; allowed: " .. allow)
    return
  end
  local body_sent = (method == "POST" or method == "PUT" or method == "PATCH") and has_body(headers)
  if omega and body_sent and not is_json(content_type) and not raw_body(rest) then
    handle:respond({ [":status"] = "415" }, "the request body must be JSON (Content-Type: application/json)")
    return
  end
  -- Only the few bindings with lists in their body are read here; others stream through.
  if route ~= nil and body_sent and #route[3] > 0 then
    local body = handle:body()
    local text = body and body:getBytes(0, body:length()) or ""
    local field = scalar_for_list(text, route[3])
    if field ~= nil then
      -- A 400 from the REST edge becomes the 422 Parameter Error (local_reply_config).
      handle:respond({ [":status"] = "400" }, field .. ": a list is expected (a JSON array), not a single value")
      return
    end
    -- The Lua API requires fetching the headers again after reading the body.
    headers = handle:headers()
  end
  if omega then
    headers:replace(":path", rest)
  end
  -- Marks the stream as a call that passed this edge, and which API it is (see
  -- envoy_on_response).
  handle:streamInfo():dynamicMetadata():set("omega", "edge", omega and "rest" or "chatwoot")
end

-- The stream's mark from envoy_on_request ("rest" or "chatwoot"), or nil when the call did not
-- pass the edge (Envoy answered it itself).
local function edge_of(handle)
  local mark = handle:streamInfo():dynamicMetadata():get("omega")
  return mark and mark["edge"]
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local decided = headers:get("x-omega-http-status")
  if decided ~= nil then
    headers:remove("x-omega-http-status")
  end
  local content_type = headers:get("content-type") or ""
  if starts_with(content_type, "application/grpc") then
    return
  end
  -- Only on calls that came through this edge: Envoy's own answers keep their status. (A
  -- successful call has nothing to decide: the stream's mark is read only when needed.)
  if decided ~= nil and edge_of(handle) ~= nil then
    headers:replace(":status", decided)
  end
  if headers:get(":status") == "404" and edge_of(handle) == "chatwoot" then
    -- Chatwoot's clients read its 404 as {"error": "Resource could not be found"}: the Chatwoot
    -- paths' 404s carry that field beside Omega's own {code, message}.
    local body = handle:body()
    local text = body and body:getBytes(0, body:length()) or ""
    if starts_with(text, "{") then
      body:setBytes('{"error":"Resource could not be found",' .. string.sub(text, 2))
    end
    headers = handle:headers()
  end
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-status-details-bin")
end
