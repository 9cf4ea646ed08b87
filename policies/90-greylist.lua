-- Greylisting (off by default: set enabled = true in 90-greylist.toml). The first attempt of
-- a (client /24, sender, recipient) triplet gets 451 4.7.1; a retry after delay_secs passes,
-- and the triplet stays known for ttl_days. Uses the plugin key-value store.
stages = { "rcpt" }

local cfg = mailgate.config
local delay = cfg.delay_secs or 300
local ttl = (cfg.ttl_days or 36) * 86400

local function net24(ip)
  local a, b, c = string.match(ip or "", "^(%d+)%.(%d+)%.(%d+)%.%d+$")
  if a then return a .. "." .. b .. "." .. c end
  return ip or "?" -- IPv6: the whole address
end

function on_receive(e)
  if not cfg.enabled then return nil end
  if e.session.auth_user ~= nil then return nil end
  local key = net24(e.session.client_ip) .. "|" .. string.lower(e.envelope.mail_from or "") .. "|" .. string.lower(e.recipient or "")
  local now = mailgate.now()
  local first = tonumber(mailgate.kv_get(key) or "")
  if first == nil then
    mailgate.kv_set(key, tostring(now), ttl)
    return { action = "tempfail", code = 451, enhanced = "4.7.1", text = "Greylisted, please try again later" }
  end
  if now - first < delay then
    return { action = "tempfail", code = 451, enhanced = "4.7.1", text = "Greylisted, please try again later" }
  end
  return nil
end
