local owned, prefix, tag = KEYS[1], ARGV[1], ARGV[2]
local out = {}
for _, m in ipairs(redis.call('smembers', owned)) do
  local nl = string.find(m, '\n', 1, true)
  if nl then
    local channel, client = string.sub(m, 1, nl - 1), string.sub(m, nl + 1)
    -- The keys of `Shard::key`: in a cluster with the channel's hash tag (the owned set's own).
    local function k(kind)
      if tag == '' then return prefix .. '.' .. kind .. '.' .. channel end
      return prefix .. '.' .. kind .. '.{' .. tag .. '}.' .. channel
    end
    local info = redis.call('hget', k('presence'), client)
    if info then
      drop_client(k('presence'), k('presence.exp'), k('presence.user'), k('presence.users'), client)
      out[#out + 1] = channel
      out[#out + 1] = info
    end
  end
end
redis.call('del', owned)
return out
