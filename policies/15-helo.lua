-- HELO/EHLO sanity: scores names that well-run mail servers do not send.
--   HELO_BARE_IP  an IP address without the [brackets] RFC 5321 §4.1.3 asks for
--   HELO_NO_DOT   a single label ("localhost", "desktop"): not a fully qualified name
-- Scores add to the message's total (see [spam.thresholds] in the config).
-- A client on this host (127.0.0.0/8, ::1) is skipped while 15-helo.toml says
-- skip_loopback = true (the default): see there.

stages = { "helo" }

local skip_loopback = (mailgate.config or {}).skip_loopback ~= false

local function loopback(ip)
  ip = string.lower(ip or "")
  return ip == "::1" or string.match(ip, "^127%.") ~= nil or string.match(ip, "^::ffff:127%.") ~= nil
end

function on_receive(event)
  -- Our own users' mail (SMTP AUTH, or `mailgate send`) is not scored as spam.
  if event.session.auth_user ~= nil or event.session.listener == "local" then return nil end
  if skip_loopback and loopback(event.session.client_ip) then return nil end
  local helo = event.session.helo or ""
  if mailgate.regex_match("^\\d{1,3}(\\.\\d{1,3}){3}$", helo) then
    return { score = 1.5, symbol = "HELO_BARE_IP", reason = helo }
  end
  if not string.find(helo, ".", 1, true) and not string.find(helo, "[", 1, true) then
    return { score = 0.5, symbol = "HELO_NO_DOT", reason = helo }
  end
end
