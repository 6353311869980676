//! Splitting fuzzer bytes into the pieces a check needs.

/// Reads pieces off the front of the fuzzer's input; past its end every read is empty
/// or zero, so any input is a valid one.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// A piece whose length comes first (two bytes).
    pub fn piece(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.take(n)
    }

    /// Exactly `N` bytes (zero-filled past the end).
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let t = self.take(N);
        a[..t.len()].copy_from_slice(t);
        a
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Encodes pieces the way [`Input::piece`] reads them (for seed corpora and tests).
pub fn piece(out: &mut Vec<u8>, p: &[u8]) {
    let n = u16::try_from(p.len()).expect("a piece fits in 64 KiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(p);
}
