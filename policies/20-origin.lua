-- Originating domain: what SPF, DKIM and DMARC said about the sender (event.auth, checked
-- once per message by the server because 20-origin.toml says `auth = true`), DNS
-- blocklists for the client IP and the sender's domains (none configured by default), and
-- header checks: From domain vs envelope domain, Reply-To to a free-mail domain when From
-- is not one. Scores and lists are in 20-origin.toml.
--
-- Symbols: SPF_PASS SPF_FAIL SPF_SOFTFAIL DKIM_VALID DKIM_INVALID DMARC_PASS DMARC_REJECT
-- DMARC_QUARANTINE DMARC_FAIL FROM_ENVELOPE_MISMATCH REPLYTO_FREEMAIL RBL_IP RBL_DOMAIN
-- SIGNED_LIST_MAIL

stages = { "data" }

local cfg = mailgate.config
local scores = cfg.scores or {}
local freemail = {}
for _, d in ipairs(cfg.freemail or {}) do freemail[string.lower(d)] = true end

local function domain_of(addr)
  return addr and string.match(string.lower(addr), "@([^@>%s]+)>?%s*$")
end

local function header(m, name)
  for _, h in ipairs(m.headers) do
    if string.lower(h.name) == name then return h.value end
  end
end

function on_receive(e)
  -- Our own users' mail (SMTP AUTH, or `mailgate send`) is not scored as spam.
  if e.session.auth_user ~= nil or e.session.listener == "local" then return nil end
  local out = {}
  local function add(name, reason)
    local s = scores[name]
    if s ~= nil and s ~= 0 then out[#out + 1] = { name = name, score = s, reason = reason or "" } end
  end

  local a = e.auth
  if a then
    local spf_domain = a.spf_domain or ""
    if a.spf == "pass" then add("SPF_PASS", spf_domain)
    elseif a.spf == "fail" then add("SPF_FAIL", spf_domain)
    elseif a.spf == "softfail" then add("SPF_SOFTFAIL", spf_domain) end
    if a.dkim == "pass" then add("DKIM_VALID", table.concat(a.dkim_domains or {}, " "))
    elseif a.dkim == "fail" or a.dkim == "neutral" or a.dkim == "permerror" then add("DKIM_INVALID", a.dkim) end
    local from = a.from_domain or ""
    if a.dmarc == "pass" then add("DMARC_PASS", from)
    elseif a.dmarc == "fail" then
      if a.dmarc_policy == "reject" then add("DMARC_REJECT", from)
      elseif a.dmarc_policy == "quarantine" then add("DMARC_QUARANTINE", from)
      else add("DMARC_FAIL", from) end
    end
  end

  local m = e.message
  -- A newsletter or announcement its sender signs: List-Unsubscribe (RFC 2369) and a
  -- valid DKIM signature of the From address's own organisation. Wanted bulk mail (the
  -- hard ham word statistics misjudge) looks like this; a spammer who signs for its own
  -- domain gives that domain a reputation to lose.
  local from_org = m.from and domain_of(m.from) and mailgate.org_domain(domain_of(m.from))
  if a and a.dkim == "pass" and from_org and header(m, "list-unsubscribe") then
    for _, d in ipairs(a.dkim_domains or {}) do
      if mailgate.org_domain(string.lower(d)) == from_org then
        add("SIGNED_LIST_MAIL", d)
        break
      end
    end
  end
  local env_domain = domain_of(e.envelope.mail_from)
  local from_domain = domain_of(m.from)
  if env_domain and from_domain and mailgate.org_domain(env_domain) ~= mailgate.org_domain(from_domain)
      and not (a and a.dmarc == "pass") then
    add("FROM_ENVELOPE_MISMATCH", env_domain .. " / " .. from_domain)
  end
  local reply_domain = domain_of(header(m, "reply-to"))
  if reply_domain and freemail[reply_domain] and reply_domain ~= from_domain
      and not (from_domain and freemail[from_domain]) then
    add("REPLYTO_FREEMAIL", reply_domain)
  end

  for _, zone in ipairs(cfg.dnsbl_ip or {}) do
    local ok, hits = pcall(mailgate.dnsbl, e.session.client_ip, zone)
    if ok and #hits > 0 then add("RBL_IP", zone .. " " .. hits[1]) end
  end
  local seen = {}
  for _, d in ipairs({ env_domain, from_domain }) do
    if d and not seen[d] then
      seen[d] = true
      for _, zone in ipairs(cfg.dnsbl_domain or {}) do
        local ok, hits = pcall(mailgate.dnsbl, d, zone)
        if ok and #hits > 0 then add("RBL_DOMAIN", d .. " in " .. zone) end
      end
    end
  end

  if #out == 0 then return nil end
  return { symbols = out }
end
