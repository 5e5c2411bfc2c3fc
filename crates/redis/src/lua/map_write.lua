local idem = KEYS[7]
local key, body, removed, mode = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local key_ttl, size, stream_ttl, keep = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local cmd, delta, idem_ttl, keep_tags = ARGV[10], ARGV[11] == '1', tonumber(ARGV[12]), ARGV[13] == '1'
-- A versioned write's version and its epoch ride in the entry as fields no Publication has
-- (1000, 1001): decoders skip them, this script reads them back.
local version, version_epoch = tonumber(ARGV[14]), ARGV[15]
local epoch, made = map_epoch(ARGV[9])
-- The map's keys live `keep` ms after its last write (0: for good).
local function touch()
  redis.call('hset', K.meta, 'z', size, 't', stream_ttl)
  for _, k in ipairs({K.meta, K.state, K.keys, K.exp}) do
    if keep > 0 then redis.call('pexpire', k, keep) else redis.call('persist', k) end
  end
end
if idem then
  local first = redis.call('hmget', idem, 'o', 'e', 'r')
  -- A result of another epoch (the map was cleared) is no answer.
  if first[1] and first[2] == epoch then return {tonumber(first[1]), epoch, 'idempotency', 0} end
end
local function done(offset, reason, expire_at)
  -- A meta made for a write that wrote nothing expires as the map's would.
  if made and reason ~= '' then touch() end
  -- Only what was written is remembered: a suppressed write may be tried again.
  if idem and reason == '' then
    redis.call('hset', idem, 'o', offset, 'e', epoch)
    redis.call('pexpire', idem, idem_ttl)
  end
  return {offset, epoch, reason, expire_at}
end
local top = tonumber(redis.call('hget', K.meta, 's') or '0')
local old = redis.call('hget', K.state, key)
if removed then
  if not old then return done(top, 'key_not_found', 0) end
  local offset = map_remove(key, old, body, keep_tags, size, stream_ttl, epoch, cmd)
  touch()
  return done(offset, '', 0)
end
if version > 0 and size > 0 and old then
  local held = pb_get(old, 1000)
  local held_epoch = pb_get(old, 1001) or ''
  if held and (version_epoch == '' or version_epoch == held_epoch) and held >= version then
    return done(top, 'version', 0)
  end
end
local now = now_ms()
if old and (mode == 'if_new' or mode == 'refresh') then
  local at = 0
  if mode == 'refresh' and key_ttl > 0 then
    at = now + key_ttl
    redis.call('zadd', K.exp, at, key)
    touch()
  end
  return done(top, 'key_exists', at)
end
if not old and mode == 'if_exists' then return done(top, 'key_not_found', 0) end
local offset = map_append(size, stream_ttl, body)
local stored = body .. pb_uint(6, offset)
if version > 0 then stored = stored .. pb_uint(1000, version) .. pb_bytes(1001, version_epoch) end
redis.call('hset', K.state, key, stored)
redis.call('zadd', K.keys, 0, key)
local at = 0
if key_ttl > 0 then
  at = now + key_ttl
  redis.call('zadd', K.exp, at, key)
else
  redis.call('zrem', K.exp, key)
end
local msg = body
if delta then
  -- Marked as published with delta, its base the key's previous data (field 15).
  msg = msg .. pb_uint(8, 1)
  if old then
    local d = pb_pick(old, {[4] = true})
    if d ~= '' then msg = msg .. pb_varint(15 * 8 + 2) .. string.sub(d, 2) end
  end
end
map_publish(cmd, offset, epoch, msg)
touch()
return done(offset, '', at)
