drop_client(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
if KEYS[5] then redis.call('srem', KEYS[5], ARGV[2] .. '\n' .. ARGV[1]) end
