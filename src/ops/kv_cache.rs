//! The paged KV cache on the device: one layer's k and v pages ([`KvCache`]), the views the
//! kernels take ([`KvCacheView`], [`KvCacheViewMut`]) and the step metadata an engine hands them
//! ([`PagedBatch`]). The layout itself is specified once, in [`crate::spec::kv_cache`] (re-exported
//! here).
//!
//! An engine that owns its cache buffers wraps them: `DeviceTensor::from_slice(buf, dtype,
//! &layout.shape(num_pages, page_size, kv_heads, head_dim))` for k and for v, then
//! `KvCacheView { k: k.view(), v: v.view(), layout }`.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DeviceTensor, View, ViewMut};
use cudarc::driver::CudaView;

pub use crate::spec::kv_cache::*;

/// One layer's cache, owned: k and v tensors of [`KvCacheDims::shape`].
pub struct KvCache {
    pub k: DeviceTensor,
    pub v: DeviceTensor,
    pub layout: KvLayout,
}

impl KvCache {
    /// A zeroed cache of `num_pages` pages of `page_size` positions.
    pub fn zeros(gpu: &Gpu, dtype: DType, layout: KvLayout, num_pages: usize, page_size: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        let shape = layout.shape(num_pages, page_size, kv_heads, head_dim);
        let cache = KvCache { k: DeviceTensor::zeros(gpu, dtype, &shape)?, v: DeviceTensor::zeros(gpu, dtype, &shape)?, layout };
        cache.dims()?;
        Ok(cache)
    }

    pub fn dims(&self) -> Result<KvCacheDims> {
        check(OP, self.k.layout(), self.v.layout(), self.layout)
    }

    pub fn view(&self) -> KvCacheView<'_> {
        KvCacheView { k: self.k.view(), v: self.v.view(), layout: self.layout }
    }

    pub fn view_mut(&mut self) -> KvCacheViewMut<'_> {
        KvCacheViewMut { k: self.k.view_mut(), v: self.v.view_mut(), layout: self.layout }
    }

    /// Bytes of k and v together.
    pub fn bytes(&self) -> usize {
        self.k.layout().bytes() + self.v.layout().bytes()
    }
}

/// A cache read by attention.
pub struct KvCacheView<'a> {
    pub k: View<'a>,
    pub v: View<'a>,
    pub layout: KvLayout,
}

impl KvCacheView<'_> {
    /// Validate the pair as a cache of its layout (`op` names the caller in errors).
    pub fn dims(&self, op: &'static str) -> Result<KvCacheDims> {
        check(op, self.k.layout(), self.v.layout(), self.layout)
    }
}

/// A cache written by the RoPE cache write.
pub struct KvCacheViewMut<'a> {
    pub k: ViewMut<'a>,
    pub v: ViewMut<'a>,
    pub layout: KvLayout,
}

impl KvCacheViewMut<'_> {
    pub fn dims(&self, op: &'static str) -> Result<KvCacheDims> {
        check(op, self.k.layout(), self.v.layout(), self.layout)
    }
}

/// Where each sequence of a batch lives in a paged cache, on the device (an engine's own cudarc
/// buffers): `block_tables` [batch, max_pages] and `seq_lens` [batch], i32 (see
/// [`crate::spec::kv_cache`]). The values are checked by the kernels, not here: a row whose length
/// is outside `1..=max_pages * page_size` or whose pages are outside the cache is skipped and
/// flagged, never read out of bounds.
#[derive(Clone, Copy)]
pub struct PagedBatch<'a> {
    pub block_tables: &'a CudaView<'a, i32>,
    pub max_pages: usize,
    pub seq_lens: &'a CudaView<'a, i32>,
}

impl PagedBatch<'_> {
    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.seq_lens.len()
    }

    /// Host-side checks of the arrays' lengths and of `max_pages` (`op` names the caller).
    pub fn check(&self, op: &'static str, cache: &KvCacheDims) -> Result<()> {
        let batch = self.batch();
        if self.max_pages == 0 || Some(self.block_tables.len()) != batch.checked_mul(self.max_pages) {
            return Err(Error::shape(op, format!("block table of {} entries for {batch} sequences of {} pages", self.block_tables.len(), self.max_pages)));
        }
        if self.max_pages.checked_mul(cache.page_size).is_none_or(|n| n > i32::MAX as usize) || batch > i32::MAX as usize {
            return Err(Error::unsupported(op, format!("{} pages of {} positions, {batch} sequences: past i32", self.max_pages, cache.page_size)));
        }
        Ok(())
    }

    /// The longest sequence the table can describe: `max_pages * page_size`.
    pub fn max_len(&self, cache: &KvCacheDims) -> usize {
        self.max_pages * cache.page_size
    }
}
