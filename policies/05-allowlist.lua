-- Allow list: mail from these senders or domains is accepted without further checks
-- (later policies and the score thresholds are skipped). Edit 05-allowlist.toml.
--
-- event.envelope.mail_from is the SMTP envelope sender ("" for bounces).

stages = { "mail" }

local senders = {}
for _, s in ipairs(mailgate.config.senders or {}) do senders[string.lower(s)] = true end
local domains = {}
for _, d in ipairs(mailgate.config.domains or {}) do domains[string.lower(d)] = true end

function on_receive(event)
  local from = string.lower(event.envelope.mail_from or "")
  local domain = string.match(from, "@([^@]+)$")
  if senders[from] or (domain and domains[domain]) then
    return { action = "accept", symbol = "ALLOWLISTED", score = 0, reason = from }
  end
end
