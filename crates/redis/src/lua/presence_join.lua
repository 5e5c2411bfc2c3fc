local h, z, u, c, owned = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5] or ''
local client, info, ttl, channel, user, max_users = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
-- Expired entries out first: the counts below must be the live ones.
clean(h, z, u, c)
local known = redis.call('hexists', h, client) == 1
if not known and max_users > 0 and redis.call('hexists', c, user) == 0 and redis.call('hlen', c) >= max_users then
  return -1
end
local now = tonumber(redis.call('time')[1])
redis.call('zadd', z, now + ttl, client)
local n = 0
if redis.call('hset', h, client, info) == 1 then
  redis.call('hset', u, client, user)
  n = redis.call('hincrby', c, user, 1)
end
for _, k in ipairs({h, z, u, c}) do redis.call('expire', k, ttl) end
if owned ~= '' then
  redis.call('sadd', owned, channel .. '\n' .. client)
  redis.call('expire', owned, ttl * 2)
end
return n
