//! Guard-banded device tensors for the op tests: `BAND` elements of GUARD before and after the
//! tensor's elements, which start poisoned (NaN) or hold given values; reading back asserts the
//! bands are untouched.

use crate::common::{GUARD, POISON};
use qwen_kernels::{DType, DeviceTensor, Gpu, HostTensor, ViewMut};

/// Guard elements each side: 64 keeps the inner elements 16-byte aligned in every dtype.
pub const BAND: usize = 64;

pub struct Guarded {
    t: DeviceTensor,
    dims: Vec<usize>,
    n: usize,
}

impl Guarded {
    /// Inner elements poisoned with NaN.
    pub fn poisoned(gpu: &Gpu, dtype: DType, dims: &[usize]) -> Guarded {
        let n = dims.iter().product();
        Guarded::with(gpu, dtype, dims, &vec![POISON; n])
    }

    /// Inner elements = `host`'s values.
    pub fn from_host(gpu: &Gpu, host: &HostTensor) -> Guarded {
        Guarded::with(gpu, host.dtype(), host.dims(), host.data())
    }

    fn with(gpu: &Gpu, dtype: DType, dims: &[usize], values: &[f32]) -> Guarded {
        let n = values.len();
        let mut all = vec![GUARD; BAND];
        all.extend_from_slice(values);
        all.extend_from_slice(&[GUARD; BAND]);
        let host = HostTensor::from_f32(dtype, &[n + 2 * BAND], all).unwrap();
        Guarded { t: DeviceTensor::from_host(gpu, &host).unwrap(), dims: dims.to_vec(), n }
    }

    /// Run `f` on a mutable view of the inner elements (a view of rows cannot outlive the
    /// full view it is cut from, hence the closure).
    pub fn with_mut<R>(&mut self, f: impl FnOnce(&mut ViewMut<'_>) -> R) -> R {
        let (n, dims) = (self.n, self.dims.clone());
        let mut full = self.t.view_mut();
        let inner = full.rows_mut(BAND..BAND + n).unwrap();
        let mut inner = inner.reshape(&dims).unwrap();
        f(&mut inner)
    }

    /// The inner elements, after asserting both guard bands are unchanged.
    pub fn inner(&self, gpu: &Gpu, what: &str) -> Vec<f32> {
        let all = self.t.to_host(gpu).unwrap().into_data();
        assert!(all[..BAND].iter().all(|&v| v == GUARD), "{what}: guard band before the tensor was written");
        assert!(all[BAND + self.n..].iter().all(|&v| v == GUARD), "{what}: guard band after the tensor was written");
        all[BAND..BAND + self.n].to_vec()
    }
}
