-- Keyword rules: named regexes with scores and groups, from the folders in
-- 30-keywords.toml (`keyword_dirs`), compiled once per policy load by the host.

function on_receive(e)
  -- Our own users' mail (SMTP AUTH, or `mailgate send`) is not scored as spam.
  if e.session.auth_user ~= nil or e.session.listener == "local" then return nil end
  local total, names, reasons = 0, {}, {}
  for _, h in ipairs(mailgate.keywords(e.message)) do
    if h.score ~= 0 then
      total = total + h.score
      names[#names + 1] = h.name
      reasons[#reasons + 1] = h.name .. ": " .. h.description
    end
  end
  if total == 0 then return nil end
  return { score = total, symbol = table.concat(names, ","), reason = table.concat(reasons, "; ") }
end
