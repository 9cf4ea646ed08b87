-- Letter combinations: obfuscated words (V1@gr@), invisible characters, mixed scripts in
-- one word, shouting and punctuation runs, gibberish. The host finds them
-- (mailgate.letters); the scores are in 40-letters.toml.

local scores = mailgate.config.scores or {}

function on_receive(e)
  -- Our own users' mail (SMTP AUTH, or `mailgate send`) is not scored as spam.
  if e.session.auth_user ~= nil or e.session.listener == "local" then return nil end
  local total, names, reasons = 0, {}, {}
  for _, f in ipairs(mailgate.letters(e.message)) do
    local s = scores[f.name]
    if s ~= nil and s ~= 0 then
      total = total + s
      names[#names + 1] = f.name
      reasons[#reasons + 1] = string.format("%s x%d (%s)", f.name, f.count, f.example)
    end
  end
  if total == 0 then return nil end
  return { score = total, symbol = table.concat(names, ","), reason = table.concat(reasons, "; ") }
end
