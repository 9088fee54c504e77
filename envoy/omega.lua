-- Omega's REST edge, run by Envoy's Lua filter between gRPC-Web and the JSON transcoder.
--
-- Requests: REST lives under the public base path /omega (and the Chatwoot-compatible API under
-- /public/api/v1). The protos' google.api.http paths have no /omega, so it is stripped here,
-- before the transcoder matches; the public path is kept in x-omega-public-path, because
-- provider signatures (Twilio) are computed over the URL the provider called. gRPC and gRPC-Web
-- calls (/omega.v1.Service/Method) pass untouched. Anything else is a JSON 404.
--
-- Responses: a transcoded INVALID_ARGUMENT (HTTP 400 with "code":3) becomes the seeds'
-- 422 Parameter Error, FAILED_PRECONDITION ("code":9) becomes 409, and leftover grpc-*
-- headers are dropped from REST answers.

local function starts_with(s, prefix)
  return string.sub(s, 1, #prefix) == prefix
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if starts_with(content_type, "application/grpc") then
    return
  end
  local path = headers:get(":path") or "/"
  headers:replace("x-omega-public-path", path)
  if path == "/omega" or starts_with(path, "/omega/") or starts_with(path, "/omega?") then
    local rest = string.sub(path, 7)
    if rest == "" or starts_with(rest, "?") then
      rest = "/" .. rest
    end
    headers:replace(":path", rest)
  elseif not starts_with(path, "/public/api/v1/") then
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
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-status-details-bin")
end
