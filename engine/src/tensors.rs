//! Tensor files: the only module that reads or writes tensors on disk.
//!
//! Tensors cross the process boundary to the Python worker as safetensors files, written here
//! with tch and read there with the `safetensors` package (and back). safetensors does not keep
//! the order of tensors, so everything goes by name.

use std::collections::HashMap;
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
    }
}
