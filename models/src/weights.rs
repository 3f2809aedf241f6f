//! Looking up a model's weights by name with the shape and type the hyper-parameters imply,
//! so a bad file is refused at load with the tensor's name, never later in a kernel.

use tessera_engine::{DType, GgufFile, Tensor, quant};

use crate::error::{ModelError, Result};

/// Finds and checks tensors in a GGUF file.
pub struct WeightLoader<'a> {
    file: &'a GgufFile,
}

impl<'a> WeightLoader<'a> {
    /// A loader over `file`.
    pub fn new(file: &'a GgufFile) -> Self {
        WeightLoader { file }
    }

    /// Whether tensor `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.file.tensor_info(name).is_some()
    }

    /// Tensor `name`, which must have ggml-order `shape` and a computable type.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.into()))?;
        if t.shape() != shape {
            return Err(ModelError::BadShape {
                name: name.into(),
                expected: shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        if !quant::format(t.dtype()).is_some_and(|f| f.is_weight) {
            return Err(ModelError::UnsupportedDType {
                name: name.into(),
                dtype: t.dtype(),
            });
        }
        Ok(t)
    }

    /// A norm weight: a vector of `n` elements, used as F32 (see [`Self::f32`]).
    pub fn norm(&self, name: &str, n: usize) -> Result<Tensor> {
        self.f32(name, &[n])
    }

    /// A small tensor of ggml shape `shape` used as F32 (norms, biases, expert biases): F16
    /// and BF16 are converted at load; other types are refused.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name, shape)?;
        match t.dtype() {
            DType::F32 => Ok(t),
            DType::F16 | DType::BF16 => {
                let ops = tessera_engine::quant::reference(t.dtype()).expect("F16/BF16 kernels");
                let mut values = vec![0f32; t.n_elements()];
                (ops.dequantize_row)(t.data(), &mut values);
                Ok(Tensor::from_f32(name, shape.to_vec(), &values))
            }
            dtype => Err(ModelError::UnsupportedDType {
                name: name.into(),
                dtype,
            }),
        }
    }
}
