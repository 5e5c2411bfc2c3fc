-- Shared by the map scripts. A map channel's keys: `state` (key -> its entry, an encoded
-- Publication with its offset), `keys` (every key at score 0, so that ZRANGEBYLEX pages them
-- in byte order: cursors are keys), `exp` (key -> expiry, ms), `stream` (the change stream,
-- IDs `{offset}-1`), `meta` (epoch `e`, top offset `s`, and the retention the expiry sweep
-- needs: stream size `z`, stream TTL `t`), `chan` (the pub/sub channel).
-- Entries are built by appending Protobuf fields to an encoded Publication: a decoder keeps
-- the last value of a scalar and merges maps, so no script needs to decode one whole.

local function pb_varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = math.floor(n / 128)
    if n > 0 then b = b + 128 end
    out[#out + 1] = string.char(b)
  until n == 0
  return table.concat(out)
end

local function pb_read_varint(s, i)
  local n, mul = 0, 1
  while true do
    local b = string.byte(s, i)
    if not b then return n, i end
    i = i + 1
    n = n + (b % 128) * mul
    if b < 128 then return n, i end
    mul = mul * 128
  end
end

-- The field of `s` that starts at `i`: its number, its value (a varint's number, a
-- length-delimited field's bytes; nil for fixed-width ones) and where the next one starts;
-- nil when `s` ends there or the wire type is unknown.
local function pb_field(s, i)
  if i > #s then return nil end
  local tag
  tag, i = pb_read_varint(s, i)
  local field, wire = math.floor(tag / 8), tag % 8
  local v
  if wire == 0 then
    v, i = pb_read_varint(s, i)
  elseif wire == 2 then
    local len
    len, i = pb_read_varint(s, i)
    v = string.sub(s, i, i + len - 1)
    i = i + len
  elseif wire == 1 then
    i = i + 8
  elseif wire == 5 then
    i = i + 4
  else
    return nil
  end
  return field, v, i
end

-- The encoded fields of `s` whose numbers are in `want`, as they are (tags included).
local function pb_pick(s, want)
  local out, i = {}, 1
  while true do
    local field, _, next_i = pb_field(s, i)
    if not field then break end
    if want[field] then out[#out + 1] = string.sub(s, i, next_i - 1) end
    i = next_i
  end
  return table.concat(out)
end

-- The value of the last `field` of `s`: a number (varint) or a string; nil when absent.
local function pb_get(s, field)
  local found, i = nil, 1
  while true do
    local f, v, next_i = pb_field(s, i)
    if not f then break end
    if f == field then found = v end
    i = next_i
  end
  return found
end

local function pb_bytes(field, value)
  return pb_varint(field * 8 + 2) .. pb_varint(#value) .. value
end

local function pb_uint(field, n)
  if n == 0 then return '' end
  return pb_varint(field * 8) .. pb_varint(n)
end

-- Redis's clock (ms): every node's writes and sweeps agree on expiries.
local function now_ms()
  local t = redis.call('time')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local K = {state = KEYS[1], keys = KEYS[2], exp = KEYS[3], stream = KEYS[4], meta = KEYS[5], chan = KEYS[6]}

-- The map's epoch, made when the meta is absent (a new map, or one whose meta expired or
-- was lost: whatever is left of the older epoch is dropped with it). Second: made now.
local function map_epoch(epoch)
  local e = redis.call('hget', K.meta, 'e')
  if e then return e, false end
  redis.call('del', K.state, K.keys, K.exp, K.stream)
  redis.call('hset', K.meta, 'e', epoch)
  return epoch, true
end

-- Appends `entry` to the stream at the next offset, when the map keeps a stream (else 0).
local function map_append(size, stream_ttl, entry)
  if size <= 0 then return 0 end
  local offset = redis.call('hincrby', K.meta, 's', 1)
  if offset == 1 then redis.call('del', K.stream) end
  redis.call('xadd', K.stream, 'MAXLEN', size, offset .. '-1', 'd', entry)
  if stream_ttl > 0 then redis.call('pexpire', K.stream, stream_ttl) end
  return offset
end

-- Tells every subscribed node; the first publication of a stream carries its epoch.
local function map_publish(cmd, offset, epoch, payload)
  if cmd == '' then return end
  if offset == 1 then payload = payload .. pb_bytes(14, epoch) end
  redis.call(cmd, K.chan, 'p' .. offset .. ':' .. epoch .. ':' .. payload)
end

-- Takes `key` out (its entry was `old`), then appends and publishes `removal` with the old
-- entry's time and, unless the removal has tags of its own, its tags. Returns the offset.
local function map_remove(key, old, removal, keep_tags, size, stream_ttl, epoch, cmd)
  redis.call('hdel', K.state, key)
  redis.call('zrem', K.keys, key)
  redis.call('zrem', K.exp, key)
  local want = {[9] = true}
  if not keep_tags then want[7] = true end
  local entry = removal .. pb_pick(old, want)
  local offset = map_append(size, stream_ttl, entry)
  map_publish(cmd, offset, epoch, entry)
  return offset
end
