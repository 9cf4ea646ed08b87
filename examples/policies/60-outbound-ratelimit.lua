-- Outbound spam control: each authenticated user may send at most `per_hour` messages an
-- hour (a hijacked account is stopped before it sends thousands). Counted per clock hour in
-- the plugin key-value store, so the count survives restarts and reloads.
--
-- At MAIL an over-limit user gets 450 4.7.1 (a temporary refusal: the client keeps the
-- message and can send it later); an accepted message counts at the data stage.
-- Two sessions of one user racing can each read the same count, so the limit may be passed
-- by the number of sessions that user runs at once.
stages = { "mail", "data" }

local cfg = mailgate.config
local per_hour = cfg.per_hour or 100

local function key(user)
  return string.lower(user) .. "|" .. tostring(mailgate.now() // 3600)
end

function on_receive(e)
  local user = e.session.auth_user
  if user == nil then return nil end
  local k = key(user)
  local sent = tonumber(mailgate.kv_get(k) or "0") or 0
  if e.stage == "mail" then
    if sent >= per_hour then
      return { action = "tempfail", code = 450, enhanced = "4.7.1",
               text = "Sending limit reached (" .. per_hour .. " messages an hour); try later" }
    end
    return nil
  end
  mailgate.kv_set(k, tostring(sent + 1), 7200)
  return nil
end
