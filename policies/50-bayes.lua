-- Bayes: the trained classifier's spam probability becomes a score through the bands in
-- 50-bayes.toml. Train with `mailgate spam train --spam DIR --ham DIR`; users' moves into and
-- out of Junk keep training it. Without a model this policy adds nothing.
--
-- A message that links to its own From domain (the same organisational domain) is what a
-- legitimate sender's newsletter looks like, and such mail is where word statistics fail:
-- it says what spam says. For it the bands above `own_links.max_probability` need a
-- log-odds of at least `own_links.min_log_odds`; below that it scores as if P(spam) were
-- `max_probability` (docs/spam.md has the measurement).

local cfg = mailgate.config
local bands = cfg.bands or {}
local own = cfg.own_links

-- The From domain's organisation when one of the message's links is in it, else nil.
local function linked_from_domain(m)
  local d = m.from and string.match(string.lower(m.from), "@([^@>%s]+)>?%s*$")
  if not d then return nil end
  local org = mailgate.org_domain(d)
  for _, host in ipairs(m.links) do
    if mailgate.org_domain(host) == org then return org end
  end
  return nil
end

function on_receive(e)
  -- Our own users' mail (SMTP AUTH, or `mailgate send`) is not scored as spam.
  if e.session.auth_user ~= nil or e.session.listener == "local" then return nil end
  local r = mailgate.bayes(e.message)
  if r == nil then return nil end
  local p = r.probability
  local note = ""
  if own and p > own.max_probability and r.log_odds < own.min_log_odds then
    local org = linked_from_domain(e.message)
    if org then
      p = own.max_probability
      note = string.format("; links to its From domain %s, log-odds %.0f < %.0f", org, r.log_odds, own.min_log_odds)
    end
  end
  for _, b in ipairs(bands) do
    if (b.min == nil or p >= b.min) and (b.max == nil or p < b.max) then
      local top = {}
      for i = 1, math.min(3, #r.tokens) do
        top[#top + 1] = r.tokens[i].token
      end
      return {
        score = b.score,
        symbol = b.symbol,
        reason = string.format("P(spam)=%.4f, log-odds %.1f; strongest tokens: %s%s",
          r.probability, r.log_odds, table.concat(top, ", "), note),
      }
    end
  end
  return nil
end
