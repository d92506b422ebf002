//! TEMPORARY stub until the real implementation lands from the router-hash branch.
pub fn hash_int(v: i64) -> u64 {
    v as u64
}
pub fn hash_text(bytes: &[u8]) -> u64 {
    bytes.iter().map(|b| *b as u64).sum()
}
pub fn hash_uuid(u: &[u8; 16]) -> u64 {
    hash_text(u)
}
pub fn bucket_of(hash: u64, buckets: u32) -> u32 {
    (hash % u64::from(buckets)) as u32
}
