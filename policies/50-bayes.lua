-- Bayes: the trained classifier's spam probability becomes a score through the bands in
-- 50-bayes.toml. Train with `mailgate spam train --spam DIR --ham DIR`; users' moves into and
-- out of Junk keep training it. Without a model this policy adds nothing.

local bands = mailgate.config.bands or {}

function on_receive(e)
  local r = mailgate.bayes(e.message)
  if r == nil then return nil end
  local p = r.probability
  for _, b in ipairs(bands) do
    if (b.min == nil or p >= b.min) and (b.max == nil or p < b.max) then
      local top = {}
      for i = 1, math.min(3, #r.tokens) do
        top[#top + 1] = r.tokens[i].token
      end
      return {
        score = b.score,
        symbol = b.symbol,
        reason = string.format("P(spam)=%.4f; strongest tokens: %s", p, table.concat(top, ", ")),
      }
    end
  end
  return nil
end
