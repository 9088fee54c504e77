-- Omega's REST edge, run by Envoy's Lua filter between gRPC-Web and the JSON transcoder.
--
-- Requests: REST lives under the public base path /omega (and the Chatwoot-compatible API under
-- /public/api/v1). The protos' google.api.http paths have no /omega, so it is stripped here,
-- before the transcoder matches; the public path is kept in x-omega-public-path, because
-- provider signatures (Twilio) are computed over the URL the provider called. gRPC and gRPC-Web
-- calls (/omega.v1.Service/Method) pass untouched. Anything else is a JSON 404. A body sent to a
-- JSON endpoint must say it is JSON: anything else (a form post, text/plain, no content type) is a
-- 415, so that a page on another site cannot post a JSON-looking form body. Provider webhooks
-- take their bodies raw (google.api.HttpBody); their paths come from the protos.
--
-- Responses: a transcoded INVALID_ARGUMENT (HTTP 400 with "code":3) becomes the seeds'
-- 422 Parameter Error, FAILED_PRECONDITION ("code":9) becomes 409, and leftover grpc-*
-- headers are dropped from REST answers.

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
  if path == "/omega" or starts_with(path, "/omega/") or starts_with(path, "/omega?") then
    local rest = string.sub(path, 7)
    if rest == "" or starts_with(rest, "?") then
      rest = "/" .. rest
    end
    local method = headers:get(":method")
    if (method == "POST" or method == "PUT" or method == "PATCH") and has_body(headers)
        and not is_json(content_type) and not raw_body(rest) then
      -- Envoy's local_reply_config wraps this text into the JSON error shape.
      handle:respond({ [":status"] = "415" }, "the request body must be JSON (Content-Type: application/json)")
      return
    end
    headers:replace(":path", rest)
  elseif starts_with(path, "/public/api/v1/") then
    handle:streamInfo():dynamicMetadata():set("omega.lua", "chatwoot", "1")
  else
    -- Envoy's local_reply_config wraps this text into the JSON error shape.
    handle:respond({ [":status"] = "404" }, "no such endpoint; the REST API lives under /omega")
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if starts_with(content_type, "application/grpc") then
    return
  end
  if headers:get(":status") == "400" then
    local body = handle:body()
    local text = body and body:getBytes(0, body:length()) or ""
    -- The Lua API requires fetching the headers again after reading the body.
    headers = handle:headers()
    if string.find(text, '"code":3,', 1, true) then
      headers:replace(":status", "422")
    elseif string.find(text, '"code":9,', 1, true) then
      -- FAILED_PRECONDITION (e.g. a status change the conversation's state forbids): a conflict
      -- with the resource's state, like ALREADY_EXISTS.
      headers:replace(":status", "409")
    end
  end
  local marks = handle:streamInfo():dynamicMetadata():get("omega.lua")
  if headers:get(":status") == "404" and marks ~= nil and marks["chatwoot"] == "1" then
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
