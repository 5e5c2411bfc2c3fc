local function drop_client(h, z, u, c, client)
  if redis.call('hdel', h, client) == 1 then
    local user = redis.call('hget', u, client)
    redis.call('hdel', u, client)
    if user and redis.call('hincrby', c, user, -1) <= 0 then redis.call('hdel', c, user) end
  end
  redis.call('zrem', z, client)
end
local function clean(h, z, u, c)
  local now = tonumber(redis.call('time')[1])
  for _, client in ipairs(redis.call('zrangebyscore', z, '-inf', now)) do drop_client(h, z, u, c, client) end
end
