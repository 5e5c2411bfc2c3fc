local batch, cmd = tonumber(ARGV[1]), ARGV[2]
local epoch = redis.call('hget', K.meta, 'e')
if not epoch then
  -- The map itself expired: no subscriber holds its epoch any more.
  redis.call('del', K.exp)
  return {0, 0}
end
local size = tonumber(redis.call('hget', K.meta, 'z') or '0')
local stream_ttl = tonumber(redis.call('hget', K.meta, 't') or '0')
local due = redis.call('zrangebyscore', K.exp, '-inf', now_ms(), 'LIMIT', 0, batch)
for _, key in ipairs(due) do
  local old = redis.call('hget', K.state, key)
  if old then
    map_remove(key, old, pb_bytes(11, key) .. pb_uint(12, 1), false, size, stream_ttl, epoch, cmd)
  else
    redis.call('zrem', K.exp, key)
  end
end
local first = redis.call('zrange', K.exp, 0, 0, 'WITHSCORES')
return {#due, tonumber(first[2] or '0')}
