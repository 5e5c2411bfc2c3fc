clean(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return redis.call('hgetall', KEYS[1])
