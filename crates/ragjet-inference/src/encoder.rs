//! The transformer forward pass, kept behind one small type so that the
//! batching, tokenisation and pooling around it never depend on how it is
//! computed (a faster CPU path or a CUDA path replaces only this file).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use crate::error::{invalid, Result};

/// One padded batch, row-major `rows × seq_len`, padding on the right.
pub(crate) struct PaddedBatch {
    pub rows: usize,
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub mask: Vec<u32>,
}

impl PaddedBatch {
    pub fn with_capacity(rows: usize, seq_len: usize) -> Self {
        let n = rows * seq_len;
        Self {
            rows,
            seq_len,
            input_ids: Vec::with_capacity(n),
            type_ids: Vec::with_capacity(n),
            mask: Vec::with_capacity(n),
        }
    }

    /// Appends one text's tokens, padded with zeros to `seq_len`.
    pub fn push(&mut self, ids: &[u32], type_ids: &[u32]) {
        let pad = self.seq_len - ids.len();
        self.input_ids.extend_from_slice(ids);
        self.input_ids.extend(std::iter::repeat_n(0, pad));
        self.type_ids.extend_from_slice(type_ids);
        self.type_ids.extend(std::iter::repeat_n(0, pad));
        self.mask.extend(std::iter::repeat_n(1, ids.len()));
        self.mask.extend(std::iter::repeat_n(0, pad));
    }
}

pub(crate) struct BertEncoder {
    model: BertModel,
    device: Device,
    hidden_size: usize,
}

impl BertEncoder {
    pub fn load(config: &BertConfig, weights: &std::path::Path) -> Result<Self> {
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only; candle validates the
        // safetensors header and every tensor's size before use.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
            .map_err(|e| invalid(weights, e))?;
        let model = BertModel::load(vb, config).map_err(|e| invalid(weights, e))?;
        Ok(Self {
            model,
            device,
            hidden_size: config.hidden_size,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Runs the encoder; returns the last hidden states, row-major
    /// `rows × seq_len × hidden_size`.
    pub fn forward(&self, batch: PaddedBatch) -> Result<Vec<f32>> {
        let shape = (batch.rows, batch.seq_len);
        let ids = Tensor::from_vec(batch.input_ids, shape, &self.device)?;
        let types = Tensor::from_vec(batch.type_ids, shape, &self.device)?;
        let mask = Tensor::from_vec(batch.mask, shape, &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        Ok(hidden.flatten_all()?.to_vec1::<f32>()?)
    }
}
