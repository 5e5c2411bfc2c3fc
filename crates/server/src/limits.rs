//! Process limits.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (through the `rlimit` crate, since the
/// workspace forbids `unsafe`). Returns the limit in force after.
pub fn raise_nofile() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_reaches_the_hard_limit() {
        let after = super::raise_nofile().unwrap();
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!(after, soft);
        assert_eq!(soft, hard);
    }
}
