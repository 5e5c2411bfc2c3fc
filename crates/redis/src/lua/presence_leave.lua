local user = redis.call('hget', KEYS[3], ARGV[1])
drop_client(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
if KEYS[5] then redis.call('srem', KEYS[5], ARGV[2] .. '\n' .. ARGV[1]) end
if not user then return -1 end
return tonumber(redis.call('hget', KEYS[4], user) or '0')
