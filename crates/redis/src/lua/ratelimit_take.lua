local key = KEYS[1]
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', key, 't', 'ts')
local tokens, last = tonumber(state[1]), tonumber(state[2])
if tokens == nil or last == nil then
  tokens, last = burst, now
end
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', key, 't', string.format('%.17g', tokens), 'ts', string.format('%.17g', now))
redis.call('PEXPIRE', key, math.max(1, math.ceil(burst / rate * 2000)))
return allowed
