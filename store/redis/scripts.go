package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts. Each call of the store runs one of them per hash slot
// it touches (one in all on a single server), so that everything a call
// does to one lock is atomic and the call costs one round trip.
//
// Conventions:
//   - KEYS[i] is a lock's lease key; the script derives the lock's other
//     keys (rec, tok, resv) from it by replacing the suffix. They share its
//     hash tag, hence its slot.
//   - Times are microseconds of the server's clock (TIME). Lua numbers are
//     doubles: integers up to 2^53 are exact, and microseconds since 1970
//     stay below that until the year 2255. Numbers are written to Redis with
//     fmt (string.format %d): Lua's own conversion would use %.14g and lose
//     digits.
//   - A lease key exists exactly while the lease is unexpired: Redis
//     expires it (PEXPIRE, milliseconds). The lease hash also keeps its
//     expiry time in microseconds, for reporting.
//   - Replies never contain nil (it would cut an array short): absent
//     strings are "" and absent numbers 0.

const luaPrelude = `
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fmt(n) return string.format('%d', n) end
local function num(s) if s then return tonumber(s) or 0 end return 0 end
local function str(s) if s then return s end return '' end
local function stem(k) return string.sub(k, 1, -6) end
-- released: the lock of stem s has no lease now; reserve it for succ for
-- reserve ms when both are set, else end any reservation.
local function released(s, succ, reserve)
  redis.call('HDEL', s .. 'rec', 'lh')
  if succ ~= '' and reserve > 0 then
    redis.call('SET', s .. 'resv', succ, 'PX', reserve)
  else
    redis.call('DEL', s .. 'resv')
  end
end

-- read_lease and read_rec read a lock's lease and record; state turns
-- them into the reply fields decoded by parseState. A record exists when
-- it has a control (d) or a last token (lt).
local function read_lease(lk) return redis.call('HMGET', lk, 'h', 'i', 't', 'a', 'r', 'e', 'v', 'ho', 'hto', 'd') end
local function read_rec(s) return redis.call('HMGET', s .. 'rec', 'd', 'rs', 'by', 'at', 'lt', 'lh') end
local function state(lk, l, r, now)
  local s = stem(lk)
  local known = 0
  if l[1] or r[1] or r[5] then known = 1 end
  local st = {known, '', '', num(r[5]), 0, 0, 0, 0, 0, 0, str(r[2]), str(r[3]), num(r[4]), 0, '', '', 0}
  if r[1] == '1' then st[10] = 1 end
  if l[1] then
    st[2], st[3], st[4], st[5], st[6], st[7] = l[1], str(l[2]), num(l[3]), num(l[4]), num(l[5]), num(l[6])
    st[8] = num(l[6]) - now
    if st[8] < 1 then st[8] = 1 end -- the key exists: Redis says it has not expired
    if l[7] == '1' then st[9] = 1 end
    if l[8] == '1' then st[14], st[15] = 1, str(l[9]) end
    return st -- a new lease deletes the reservation: there is none
  end
  local pttl = redis.call('PTTL', s .. 'resv')
  if pttl > 0 then st[16], st[17] = redis.call('GET', s .. 'resv'), pttl * 1000 end
  return st
end

-- write_member writes the member record whose arguments start at
-- ARGV[o]: id, info, lock count, lock set id, masters, weight, ttl (ms),
-- whether the lock list follows, its length, the locks. It returns 1 when
-- the stored lock list is missing or stale and was not sent: the caller
-- sends it with its next call.
local function write_member(mk, lk, ik, o, now, chan)
  local id, info, lc, ls, ma, w = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], ARGV[o + 4], ARGV[o + 5]
  local ttl = tonumber(ARGV[o + 6])
  local haslist = ARGV[o + 7] == '1'
  local nl = tonumber(ARGV[o + 8])
  local existed = redis.call('EXISTS', mk) == 1
  local need = 0
  if haslist then
    redis.call('DEL', lk)
    local i = 1
    while i <= nl do
      local j = math.min(i + 999, nl)
      redis.call('SADD', lk, unpack(ARGV, o + 8 + i, o + 8 + j))
      i = j + 1
    end
    if nl > 0 then redis.call('PEXPIRE', lk, ttl) end
  elseif redis.call('HGET', mk, 'ls') == ls and (tonumber(lc) == 0 or redis.call('EXISTS', lk) == 1) then
    if tonumber(lc) > 0 then redis.call('PEXPIRE', lk, ttl) end
  else
    redis.call('DEL', lk)
    need = 1
  end
  redis.call('HSET', mk, 'id', id, 'info', info, 'lc', lc, 'ls', ls, 'ma', ma, 'w', w, 'seen', fmt(now))
  redis.call('PEXPIRE', mk, ttl)
  redis.call('ZADD', ik, fmt(math.floor(now / 1000) + ttl), id)
  if not existed then redis.call('PUBLISH', chan, 'member') end
  return need
end
`

// acquireScript takes every free, enabled, unreserved lock of KEYS[1..n].
//
// ARGV: 1 "1" when the global keys follow the lease keys (one server; in
// a cluster they live in another slot and globalsScript writes them), 2
// holder id, 3 holder info, 4 ttl (ms), 5 n, 6 channel, 7 "1" when member
// arguments follow the names, 8..7+n the lock names, then the member
// arguments. Global KEYS after the n lease keys: index, member hash,
// member lock set, member index.
//
// Reply: {states, need}: per lock the state fields followed by acquired,
// previous holder, previous token and whether the previous lease expired;
// need is write_member's.
var acquireScript = goredis.NewScript(luaPrelude + `
local g = ARGV[1] == '1'
local holder, info, ttl, n, chan = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local now = now_us()
local out, acquired = {}, {}
for i = 1, n do
  local lk = KEYS[i]
  local s = stem(lk)
  local l, r = read_lease(lk), read_rec(s)
  local st
  if not l[1] and r[1] ~= '1' then
    local resv = false
    if redis.call('PTTL', s .. 'resv') > 0 then resv = redis.call('GET', s .. 'resv') end
    if not resv or resv == holder then
      local tok = num(redis.call('GET', s .. 'tok')) + 1
      if tok < now then tok = now end
      local exp = now + ttl * 1000
      redis.call('SET', s .. 'tok', fmt(tok))
      redis.call('HSET', lk, 'h', holder, 'i', info, 't', fmt(tok), 'a', fmt(now), 'r', fmt(now), 'e', fmt(exp))
      redis.call('PEXPIRE', lk, ttl)
      redis.call('HSET', s .. 'rec', 'lh', holder, 'lt', fmt(tok))
      if resv then redis.call('DEL', s .. 'resv') end
      if g then redis.call('ZADD', KEYS[n + 1], 'NX', 0, ARGV[7 + i]) end
      st = {1, holder, info, tok, now, now, exp, ttl * 1000, 0, 0, str(r[2]), str(r[3]), num(r[4]), 0, '', '', 0, 1, '', 0, 0}
      if r[6] and r[6] ~= '' then st[19], st[20], st[21] = r[6], num(r[5]), 1 end
      acquired[#acquired + 1] = ARGV[7 + i]
    end
  end
  if not st then
    st = state(lk, l, r, now)
    st[18], st[19], st[20], st[21] = 0, '', 0, 0
  end
  out[i] = st
end
if #acquired > 0 then redis.call('PUBLISH', chan, 'lease\n' .. table.concat(acquired, '\n')) end
local need = 0
if g and ARGV[7] == '1' then need = write_member(KEYS[n + 2], KEYS[n + 3], KEYS[n + 4], 8 + n, now, chan) end
return {out, need}
`)

// renewScript extends each lease of KEYS[1..n] still held by the holder
// with the given token.
//
// ARGV: 1 globals flag, 2 holder id, 3 ttl (ms), 4 n, 5 channel, 6 member
// flag, 7..6+n the tokens, then the member arguments. Global KEYS after
// the lease keys: member hash, member lock set, member index.
//
// Reply: {results, need}: per lease renewed, ttl (µs), revoked, disabled,
// hand-off requested, hand-off to.
var renewScript = goredis.NewScript(luaPrelude + `
local g = ARGV[1] == '1'
local holder, ttl, n, chan = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local now = now_us()
local out = {}
for i = 1, n do
  local lk = KEYS[i]
  local l = redis.call('HMGET', lk, 'h', 't', 'v', 'ho', 'hto', 'd')
  if l[1] == holder and l[2] == ARGV[6 + i] then
    redis.call('HSET', lk, 'r', fmt(now), 'e', fmt(now + ttl * 1000))
    redis.call('PEXPIRE', lk, ttl)
    local rev, dis, ho = 0, 0, 0
    if l[3] == '1' then rev = 1 end
    if l[6] == '1' then dis = 1 end
    if l[4] == '1' then ho = 1 end
    out[i] = {1, ttl * 1000, rev, dis, ho, str(l[5])}
  else
    local dis = 0
    if redis.call('HGET', stem(lk) .. 'rec', 'd') == '1' then dis = 1 end
    out[i] = {0, 0, 0, dis, 0, ''}
  end
end
local need = 0
if g and ARGV[6] == '1' then need = write_member(KEYS[n + 1], KEYS[n + 2], KEYS[n + 3], 7 + n, now, chan) end
return {out, need}
`)

// releaseScript ends each lease of KEYS[1..n] held by the holder with the
// given token, and reserves it for a successor when one is named.
//
// ARGV: 1 holder id, 2 n, 3 channel, then per lease: name, token,
// successor, reservation (ms).
var releaseScript = goredis.NewScript(luaPrelude + `
local holder, n, chan = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local ended = {}
for i = 1, n do
  local lk = KEYS[i]
  local s = stem(lk)
  local b = 3 + (i - 1) * 4
  local l = redis.call('HMGET', lk, 'h', 't')
  if l[1] == holder and l[2] == ARGV[b + 2] then
    redis.call('DEL', lk)
    released(s, ARGV[b + 3], tonumber(ARGV[b + 4]))
    ended[#ended + 1] = ARGV[b + 1]
  end
end
if #ended > 0 then redis.call('PUBLISH', chan, 'lease\n' .. table.concat(ended, '\n')) end
return #ended
`)

// transferScript ends each lease of KEYS[1..n] held by the holder with the
// given token and, in the same script, gives the lock to the lease's
// successor: the release and the successor's acquisition are one atomic
// step, so no other instance can take the lock between them, and the old
// and the new lease never both exist. A revoked lease, a disabled lock, or
// a successor without an unexpired member record (it left, or never
// announced itself) is released as releaseScript releases it, never
// given. The new token is issued as acquireScript issues it (the greater
// of the last token plus one and the server's time in microseconds), and
// also exceeds the token of the lease it ends, which acquireScript never
// sees: it grows even when the counter key was lost while the lease
// existed.
//
// ARGV: 1 "1" when KEYS[n+1..2n] are the successors' member hashes (one
// server): the script then checks that the record exists (a member hash
// exists exactly while the record is unexpired: it has a PEXPIRE, and
// Leave deletes it) in the same atomic step as the give, and reads the
// new lease's info from it. In a cluster they live in another slot and
// the caller reads them beforehand: the per-lease member flag and info
// then say what that read found. 2 holder id, 3 ttl (ms), 4 n, 5
// channel, then per lease: name, token, successor ("" to release),
// reservation (ms), "1" when the successor had a member record and its
// info (both ignored when the member keys follow).
//
// Reply: the number of leases ended.
var transferScript = goredis.NewScript(luaPrelude + `
local g = ARGV[1] == '1'
local holder, ttl, n, chan = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local now = now_us()
local changed = {}
for i = 1, n do
  local lk = KEYS[i]
  local s = stem(lk)
  local b = 5 + (i - 1) * 6
  local succ = ARGV[b + 3]
  local l = redis.call('HMGET', lk, 'h', 't', 'v')
  if l[1] == holder and l[2] == ARGV[b + 2] then
    -- The lease key exists, so the lease is unexpired (Redis expires it).
    redis.call('DEL', lk)
    local given = succ ~= '' and l[3] ~= '1' and redis.call('HGET', s .. 'rec', 'd') ~= '1'
    local info = ''
    if given then
      -- Only to a successor with an unexpired member record: once its
      -- Leave has run, no lease can be given to it.
      if g then
        given = redis.call('EXISTS', KEYS[n + i]) == 1
        if given then info = str(redis.call('HGET', KEYS[n + i], 'info')) end
      else
        given = ARGV[b + 5] == '1'
        info = ARGV[b + 6]
      end
    end
    if given then
      local tok = num(redis.call('GET', s .. 'tok')) + 1
      if tok <= num(l[2]) then tok = num(l[2]) + 1 end
      if tok < now then tok = now end
      local exp = now + ttl * 1000
      redis.call('SET', s .. 'tok', fmt(tok))
      redis.call('HSET', lk, 'h', succ, 'i', info, 't', fmt(tok), 'a', fmt(now), 'r', fmt(now), 'e', fmt(exp))
      redis.call('PEXPIRE', lk, ttl)
      redis.call('HSET', s .. 'rec', 'lh', succ, 'lt', fmt(tok))
      redis.call('DEL', s .. 'resv')
    else
      released(s, succ, tonumber(ARGV[b + 4]))
    end
    changed[#changed + 1] = ARGV[b + 1]
  end
end
if #changed > 0 then redis.call('PUBLISH', chan, 'lease\n' .. table.concat(changed, '\n')) end
return #changed
`)

// controlScript disables or enables the lock of KEYS[1].
//
// ARGV: 1 globals flag (KEYS[2] is then the index), 2 lock name, 3
// "disable" or "enable", 4 reason, 5 by, 6 channel.
//
// Reply: {changed, state}.
var controlScript = goredis.NewScript(luaPrelude + `
local lk = KEYS[1]
local s = stem(lk)
local name, op, reason, by, chan = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now = now_us()
local d = redis.call('HGET', s .. 'rec', 'd') == '1'
local changed = 0
if op == 'disable' and not d then
  redis.call('HSET', s .. 'rec', 'd', '1', 'rs', reason, 'by', by, 'at', fmt(now))
  if redis.call('EXISTS', lk) == 1 then
    redis.call('HSET', lk, 'v', '1', 'd', '1')
    redis.call('HDEL', lk, 'ho', 'hto')
  end
  if ARGV[1] == '1' then redis.call('ZADD', KEYS[2], 'NX', 0, name) end
  changed = 1
elseif op == 'enable' and d then
  redis.call('HSET', s .. 'rec', 'd', '0', 'rs', '', 'by', by, 'at', fmt(now))
  if redis.call('EXISTS', lk) == 1 then redis.call('HSET', lk, 'd', '0') end
  changed = 1
end
if changed == 1 then redis.call('PUBLISH', chan, 'control\n' .. name) end
return {changed, state(lk, read_lease(lk), read_rec(s), now)}
`)

// handoffScript records a hand-off request on the lease of KEYS[1].
//
// ARGV: 1 lock name, 2 successor ("" for any), 3 channel.
//
// Reply: {status, state}: 0 requested, 1 no unexpired lease, 2 disabled.
var handoffScript = goredis.NewScript(luaPrelude + `
local lk = KEYS[1]
local s = stem(lk)
local now = now_us()
local l, r = read_lease(lk), read_rec(s)
if r[1] == '1' then return {2, state(lk, l, r, now)} end
if not l[1] then return {1, state(lk, l, r, now)} end
redis.call('HSET', lk, 'ho', '1', 'hto', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'control\n' .. ARGV[1])
return {0, state(lk, read_lease(lk), r, now)}
`)

// locksScript reads the state of each lock of KEYS.
var locksScript = goredis.NewScript(luaPrelude + `
local now = now_us()
local out = {}
for i = 1, #KEYS do out[i] = state(KEYS[i], read_lease(KEYS[i]), read_rec(stem(KEYS[i])), now) end
return out
`)

// globalsScript writes, in a cluster, what the lock scripts of a call
// cannot: it adds names to the index and writes the member record.
//
// KEYS: index, member hash, member lock set, member index. ARGV: 1
// channel, 2 number of names, 3.. the names, then "1" when member
// arguments follow, then those.
//
// Reply: write_member's need, or 0.
var globalsScript = goredis.NewScript(luaPrelude + `
local chan, n = ARGV[1], tonumber(ARGV[2])
local i = 1
while i <= n do
  local args = {}
  local j = math.min(i + 999, n)
  for k = i, j do
    args[#args + 1] = 0
    args[#args + 1] = ARGV[2 + k]
  end
  redis.call('ZADD', KEYS[1], 'NX', unpack(args))
  i = j + 1
end
if ARGV[3 + n] == '1' then return write_member(KEYS[2], KEYS[3], KEYS[4], 4 + n, now_us(), chan) end
return 0
`)

// membersScript lists the unexpired members.
//
// KEYS: member index. ARGV: 1 lock filter ("" for all), 2 "1" to return
// the lock lists, 3 member hash key prefix, 4 member lock set key prefix.
//
// Reply: per member {id, info, lock count, lock set id, masters, weight,
// seen (µs), ttl (ms), locks}.
var membersScript = goredis.NewScript(luaPrelude + `
local now = now_us()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(math.floor(now / 1000)))
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local mk = ARGV[3] .. id
  local pttl = redis.call('PTTL', mk)
  if pttl > 0 then
    local ok = true
    if ARGV[1] ~= '' then ok = redis.call('SISMEMBER', ARGV[4] .. id, ARGV[1]) == 1 end
    if ok then
      local m = redis.call('HMGET', mk, 'info', 'lc', 'ls', 'ma', 'w', 'seen')
      local locks = {}
      if ARGV[2] == '1' then locks = redis.call('SMEMBERS', ARGV[4] .. id) end
      out[#out + 1] = {id, str(m[1]), num(m[2]), str(m[3]), num(m[4]), str(m[5]), num(m[6]), pttl, locks}
    end
  elseif pttl == -2 then
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
`)

// leaveScript deletes a member's record.
//
// KEYS: member hash, member lock set, member index. ARGV: 1 id, 2 channel.
var leaveScript = goredis.NewScript(`
local existed = redis.call('DEL', KEYS[1], KEYS[2]) > 0
redis.call('ZREM', KEYS[3], ARGV[1])
if existed then redis.call('PUBLISH', ARGV[2], 'member') end
return 0
`)

// appendScript appends events to the history stream KEYS[1] under IDs
// "<n>-0", n the greater of the server's time in microseconds and the
// stream's last ID plus one, and trims the stream to the retention.
//
// ARGV: 1 retention, 2 channel, 3 number of events, then per event: lock,
// kind, instance, token, reason, remote.
var appendScript = goredis.NewScript(luaPrelude + `
local k = KEYS[1]
local limit, chan, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local now = now_us()
local last = 0
if redis.call('EXISTS', k) == 1 then
  local info = redis.call('XINFO', 'STREAM', k)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = tonumber(string.match(info[i + 1], '^(%d+)')) end
  end
end
local id = last + 1
if id < now then id = now end
local locks, seen = {}, {}
for i = 1, n do
  local b = 3 + (i - 1) * 6
  redis.call('XADD', k, fmt(id) .. '-0', 'l', ARGV[b + 1], 'k', ARGV[b + 2], 'i', ARGV[b + 3], 't', ARGV[b + 4],
    'r', ARGV[b + 5], 'a', ARGV[b + 6], 'at', fmt(now))
  id = id + 1
  if not seen[ARGV[b + 1]] then
    seen[ARGV[b + 1]] = true
    locks[#locks + 1] = ARGV[b + 1]
  end
end
redis.call('XTRIM', k, 'MAXLEN', limit)
redis.call('PUBLISH', chan, 'history\n' .. table.concat(locks, '\n'))
return n
`)

// eventsScript reads the history newest first.
//
// KEYS: the stream. ARGV: 1 before (entries with IDs below it; 0 for
// all), 2 limit, 3 lock filter ("" for all). A filtered read scans the
// stream in chunks inside the script: its cost grows with the retention.
var eventsScript = goredis.NewScript(luaPrelude + `
local k = KEYS[1]
local before, limit, lock = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local hi = '+'
if before > 0 then
  if before <= 1 then return {} end
  hi = fmt(before - 1)
end
if lock == '' then return redis.call('XREVRANGE', k, hi, '-', 'COUNT', limit) end
local out = {}
while true do
  local chunk = redis.call('XREVRANGE', k, hi, '-', 'COUNT', 500)
  for _, e in ipairs(chunk) do
    local f = e[2]
    for j = 1, #f, 2 do
      if f[j] == 'l' then
        if f[j + 1] == lock then
          out[#out + 1] = e
          if #out >= limit then return out end
        end
        break
      end
    end
  end
  if #chunk < 500 then return out end
  local lastn = tonumber(string.match(chunk[#chunk][1], '^(%d+)'))
  if lastn <= 1 then return out end
  hi = fmt(lastn - 1)
end
`)
