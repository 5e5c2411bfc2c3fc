local epoch, made = map_epoch(ARGV[1])
if made then redis.call('pexpire', K.meta, tonumber(ARGV[2])) end
local top = redis.call('hget', K.meta, 's') or '0'
local limit = tonumber(ARGV[4])
local keys
if ARGV[5] == '1' then
  keys = {ARGV[6]}
elseif limit > 0 then
  local from = '-'
  if ARGV[3] ~= '' then from = '(' .. ARGV[3] end
  keys = redis.call('zrangebylex', K.keys, from, '+', 'LIMIT', 0, limit + 1)
else
  keys = {}
end
local cursor = ''
if ARGV[5] ~= '1' and #keys > limit then
  keys[#keys] = nil
  cursor = keys[#keys]
end
local values = {}
for i = 1, #keys, 500 do
  local part = redis.call('hmget', K.state, unpack(keys, i, math.min(i + 499, #keys)))
  for j = 1, #part do values[#values + 1] = part[j] end
end
return {epoch, top, cursor, values}
