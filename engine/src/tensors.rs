//! Tensor files: the only module that reads or writes tensors on disk.
//!
//! Tensors cross the process boundary to the Python worker as safetensors files, written here
//! with tch and read there with the `safetensors` package (and back). safetensors does not keep
//! the order of tensors, so everything goes by name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::Tensor;

/// Write named tensors to a safetensors file (made contiguous first, as safetensors requires).
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> anyhow::Result<()> {
    let contiguous: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.contiguous()))
        .collect();
    Tensor::write_safetensors(&contiguous, path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Write named tensors with string metadata (safetensors' `__metadata__`), which the replay of a
/// counterexample reads back: tch writes the tensors, the header gains the metadata.
pub fn write_with_metadata(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    write(path, tensors)?;
    let bytes = std::fs::read(path)?;
    let (header, data) = split_header(&bytes, path)?;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)?;
    header.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut header = serde_json::to_vec(&header)?;
    while header.len() % 8 != 0 {
        header.push(b' '); // safetensors pads its header to 8 bytes
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend_from_slice(data);
    std::fs::write(path, out).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// The string metadata of a safetensors file (empty when it has none).
pub fn metadata(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let (header, _) = split_header(&bytes, path)?;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)?;
    Ok(header
        .remove("__metadata__")
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default())
}

/// A safetensors file's JSON header and its data.
fn split_header<'a>(bytes: &'a [u8], path: &Path) -> anyhow::Result<(&'a [u8], &'a [u8])> {
    let bad = || anyhow::anyhow!("{} is not a safetensors file", path.display());
    let n: [u8; 8] = bytes.get(..8).ok_or_else(bad)?.try_into()?;
    let end = usize::try_from(u64::from_le_bytes(n))?
        .checked_add(8)
        .ok_or_else(bad)?;
    let header = bytes.get(8..end).ok_or_else(bad)?;
    Ok((header, &bytes[end..]))
}

/// Read every tensor of a safetensors file, by name.
pub fn read(path: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    Ok(tensors.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn round_trip_keeps_names_kinds_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).reshape([3, 4]);
        let kinds = [
            Kind::Float,
            Kind::Double,
            Kind::BFloat16,
            Kind::Half,
            Kind::Bool,
            Kind::Uint8,
            Kind::Int64,
        ];
        let named: Vec<(String, Tensor)> = kinds
            .iter()
            .map(|k| (format!("{k:?}"), a.transpose(0, 1).to_kind(*k)))
            .collect();
        write(&path, &named).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.len(), kinds.len());
        for (name, t) in &named {
            let b = &back[name];
            assert_eq!(b.kind(), t.kind(), "{name}");
            assert!(b.equal(t), "{name}");
        }
        // Metadata rides along and the tensors read back the same.
        let meta = BTreeMap::from([("group".to_string(), "values".to_string())]);
        write_with_metadata(&path, &named, &meta).unwrap();
        assert_eq!(metadata(&path).unwrap(), meta);
        assert_eq!(read(&path).unwrap().len(), kinds.len());
        write(&path, &named).unwrap();
        assert!(metadata(&path).unwrap().is_empty());
    }
}
