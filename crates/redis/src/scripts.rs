//! The engine's Lua scripts, one `.lua` file each (under `lua/`), so that they read and
//! diff as Lua. Each runs atomically on the Redis that holds its keys: offsets are assigned
//! and presence counted without a race between nodes.

/// Appends to a channel's stream (when it keeps history) and publishes, in one step:
/// offsets are assigned in order across nodes and every node receives them in that order.
const PUBLISH: &str = include_str!("lua/publish.lua");

/// Reads a channel's stream with its epoch and top offset.
const HISTORY: &str = include_str!("lua/history.lua");

/// Presence of a channel lives in four keys: `presence` (client -> info), `presence.exp`
/// (client by expiry time), `presence.user` (client -> user) and `presence.users` (user ->
/// number of its clients), so that `presence_stats` is two `HLEN`s rather than the whole
/// map. Every script removes an entry through `drop_client`, which keeps the counts.
const PRESENCE_LIB: &str = include_str!("lua/presence_lib.lua");
/// Add (or refresh) and remove, answering what they changed for the entry's user, decided
/// in the script, so that of two nodes adding or removing a user's clients at once exactly one sees
/// the first or the last (`join_presence`, `leave_presence`), and a presence member limit
/// holds whatever the concurrency.
const PRESENCE_JOIN: &str = include_str!("lua/presence_join.lua");
const PRESENCE_LEAVE: &str = include_str!("lua/presence_leave.lua");
const PRESENCE_GET: &str = include_str!("lua/presence_get.lua");
const PRESENCE_STATS: &str = include_str!("lua/presence_stats.lua");
/// Takes a dead node's presence entries (the ones its sessions added, listed in its
/// `node_presence` set) out of every channel, and returns them as channel, info pairs so
/// that a survivor can push their leaves. Atomic: of several survivors, one gets them.
const PRESENCE_REAP: &str = include_str!("lua/presence_reap.lua");

/// Map channels (`crate::map`): the shared functions, and one script per operation, each
/// atomic over the channel's state, stream, meta and pub/sub.
const MAP_LIB: &str = include_str!("lua/map_lib.lua");
const MAP_WRITE: &str = include_str!("lua/map_write.lua");
const MAP_EXPIRE: &str = include_str!("lua/map_expire.lua");
const MAP_READ_STATE: &str = include_str!("lua/map_read_state.lua");
const MAP_READ_STREAM: &str = include_str!("lua/map_read_stream.lua");

/// The scripts of one shard (each hashed once, then called by its SHA).
pub(crate) struct Scripts {
    pub publish: redis::Script,
    pub history: redis::Script,
    pub presence_join: redis::Script,
    pub presence_leave: redis::Script,
    pub presence_get: redis::Script,
    pub presence_stats: redis::Script,
    pub presence_reap: redis::Script,
    pub map_write: redis::Script,
    pub map_expire: redis::Script,
    pub map_read_state: redis::Script,
    pub map_read_stream: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            publish: redis::Script::new(PUBLISH),
            history: redis::Script::new(HISTORY),
            presence_join: presence_script(PRESENCE_JOIN),
            presence_leave: presence_script(PRESENCE_LEAVE),
            presence_get: presence_script(PRESENCE_GET),
            presence_stats: presence_script(PRESENCE_STATS),
            presence_reap: presence_script(PRESENCE_REAP),
            map_write: map_script(MAP_WRITE),
            map_expire: map_script(MAP_EXPIRE),
            map_read_state: map_script(MAP_READ_STATE),
            map_read_stream: map_script(MAP_READ_STREAM),
        }
    }
}

/// A presence script with the shared functions in front.
fn presence_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRESENCE_LIB}{body}"))
}

/// A map script with the shared functions in front.
fn map_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{MAP_LIB}{body}"))
}
