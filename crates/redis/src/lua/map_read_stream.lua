local epoch, made = map_epoch(ARGV[1])
if made then redis.call('pexpire', K.meta, tonumber(ARGV[2])) end
local top = redis.call('hget', K.meta, 's') or '0'
local from, limit, reverse = ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
local first = redis.call('xrange', K.stream, '-', '+', 'COUNT', 1)
local first_id = ''
if first[1] then first_id = first[1][1] end
local ids, payloads = {}, {}
if limit ~= 0 then
  local count = {}
  if limit > 0 then count = {'COUNT', limit} end
  local entries
  if reverse then
    entries = redis.call('xrevrange', K.stream, '+', from, unpack(count))
  else
    entries = redis.call('xrange', K.stream, from, '+', unpack(count))
  end
  for i, e in ipairs(entries) do
    ids[i] = e[1]
    payloads[i] = e[2][2]
  end
end
return {epoch, top, first_id, ids, payloads}
