//! Incremental UTF-8 validation across fragments and partial frames.
//!
//! RFC 6455 8.1: a text message whose payload is not valid UTF-8 fails the connection. The
//! validator sees the payload piece by piece as it arrives and reports the first invalid
//! sequence at once ("fail fast"), keeping at most three bytes of an incomplete code point.

/// Validates a UTF-8 stream fed in arbitrary pieces.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The stream is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

fn width(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

impl Utf8Validator {
    /// Feeds the next piece. Fails as soon as a sequence cannot become valid.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Invalid> {
        if self.pending_len > 0 {
            let have = self.pending_len as usize;
            let need = width(self.pending[0]).saturating_sub(have);
            let take = need.min(data.len());
            let mut tmp = [0u8; 4];
            tmp[..have].copy_from_slice(&self.pending[..have]);
            tmp[have..have + take].copy_from_slice(&data[..take]);
            let total = have + take;
            match std::str::from_utf8(&tmp[..total]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // still a valid prefix of one code point
                    self.pending = tmp;
                    self.pending_len = total as u8;
                    return Ok(());
                }
                Err(_) => return Err(Invalid),
            }
            data = &data[take..];
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(Invalid),
                None => {
                    let rest = &data[e.valid_up_to()..];
                    self.pending[..rest.len()].copy_from_slice(rest);
                    self.pending_len = rest.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// Ends the stream: an incomplete code point at the end is invalid.
    pub fn finish(&mut self) -> Result<(), Invalid> {
        let ok = self.pending_len == 0;
        self.pending_len = 0;
        if ok {
            Ok(())
        } else {
            Err(Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_check(data: &[u8], cuts: &[usize]) -> bool {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &c in cuts {
            let c = c.min(data.len()).max(start);
            if v.feed(&data[start..c]).is_err() {
                return false;
            }
            start = c;
        }
        v.feed(&data[start..]).is_ok() && v.finish().is_ok()
    }

    proptest! {
        #[test]
        fn agrees_with_std(data in proptest::collection::vec(any::<u8>(), 0..64), mut cuts in proptest::collection::vec(0usize..64, 0..6)) {
            cuts.sort_unstable();
            prop_assert_eq!(split_check(&data, &cuts), std::str::from_utf8(&data).is_ok());
        }

        #[test]
        fn valid_strings_pass_in_any_pieces(s in "\\PC*", mut cuts in proptest::collection::vec(0usize..64, 0..6)) {
            cuts.sort_unstable();
            prop_assert!(split_check(s.as_bytes(), &cuts));
        }
    }

    #[test]
    fn fails_fast_inside_a_code_point() {
        let mut v = Utf8Validator::default();
        // U+10FFFF is F4 8F BF BF; F4 90 is already beyond it.
        assert!(v.feed(&[0xF4]).is_ok());
        assert_eq!(v.feed(&[0x90]), Err(Invalid));
        let mut v = Utf8Validator::default();
        assert_eq!(
            v.feed(&[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0]),
            Err(Invalid)
        );
    }

    #[test]
    fn truncated_at_end_is_invalid() {
        let mut v = Utf8Validator::default();
        assert!(v.feed(&[0xE2, 0x82]).is_ok());
        assert_eq!(v.finish(), Err(Invalid));
    }
}
