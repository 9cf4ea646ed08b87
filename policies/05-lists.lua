-- Allow and deny lists of senders (addresses) and domains, at MAIL FROM. Edit 05-lists.toml.
--   allowed: accepted without further checks (later policies and the thresholds are skipped)
--   denied:  refused with 550 5.7.1 (address or domain, or any subdomain of a listed domain)
-- The deny list wins when both match. A domain matches its subdomains too: "example.com"
-- lists "mail.example.com".
--
-- event.envelope.mail_from is the SMTP envelope sender ("" for bounces).

stages = { "mail" }

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[string.lower(v)] = true end
  return s
end

local cfg = mailgate.config
local allow_senders, allow_domains = set_of(cfg.senders), set_of(cfg.domains)
local deny_senders, deny_domains = set_of(cfg.deny_senders), set_of(cfg.deny_domains)

-- The listed domain that `domain` is or is under, if any.
local function listed(domain, set)
  local d = domain
  while d do
    if set[d] then return d end
    d = string.match(d, "^[^.]+%.(.+)$")
  end
end

function on_receive(event)
  local from = string.lower(event.envelope.mail_from or "")
  local domain = string.match(from, "@([^@]+)$")
  local denied = deny_senders[from] and from or (domain and listed(domain, deny_domains))
  if denied then
    return { action = "reject", code = 550, enhanced = "5.7.1",
             text = "Sender denied by local policy", symbol = "DENYLISTED", score = 0, reason = denied }
  end
  local allowed = allow_senders[from] and from or (domain and listed(domain, allow_domains))
  if allowed then
    return { action = "accept", symbol = "ALLOWLISTED", score = 0, reason = allowed }
  end
end
