//! What the GPU was doing while a figure was measured, through NVML (`nvml-wrapper`, which loads
//! libnvidia-ml.so at run time: without it, or on the software device, there is simply none):
//! name, SM and memory clocks against their maxima, power against its limit, temperature, and the
//! reasons the clocks are held down. Benchmarks print it beside their results and `qwen-kernels
//! info` shows it, so a slow figure can be told from a throttled GPU.
//!
//! The NVML device is found by the CUDA device's UUID, not its ordinal: the two numberings differ
//! under CUDA_VISIBLE_DEVICES or CUDA_DEVICE_ORDER.

use crate::gpu::{DeviceKind, Gpu};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::Nvml;
use std::fmt;

/// One reading of the device's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Telemetry {
    pub name: String,
    pub sm_clock_mhz: u32,
    pub max_sm_clock_mhz: u32,
    pub memory_clock_mhz: u32,
    pub max_memory_clock_mhz: u32,
    pub power_watts: f64,
    pub power_limit_watts: f64,
    pub temperature_c: u32,
    /// NVML's clock event ("throttle") reasons in force, by name; empty when none.
    pub throttle_reasons: Vec<String>,
}

impl fmt::Display for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: SM {} of {} MHz, memory {} of {} MHz, {:.0} of {:.0} W, {} C, throttle: {}",
            self.name,
            self.sm_clock_mhz,
            self.max_sm_clock_mhz,
            self.memory_clock_mhz,
            self.max_memory_clock_mhz,
            self.power_watts,
            self.power_limit_watts,
            self.temperature_c,
            if self.throttle_reasons.is_empty() { "none".to_string() } else { self.throttle_reasons.join(", ") }
        )
    }
}

/// NVML's form of a CUDA UUID: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn nvml_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("GPU-{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Read `gpu`'s state now, or say why it cannot be read.
pub fn read(gpu: &Gpu) -> Result<Telemetry, String> {
    if gpu.info().kind == DeviceKind::Software {
        return Err("the software device has no NVML".into());
    }
    let uuid = gpu.context().uuid().map_err(|e| format!("cuDeviceGetUuid: {e}"))?;
    let bytes: [u8; 16] = uuid.bytes.map(|b| b as u8);
    let nvml = Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
    let d = nvml.device_by_uuid(nvml_uuid(&bytes)).map_err(|e| format!("NVML has no device {}: {e}", nvml_uuid(&bytes)))?;
    let e = |what: &str, err: nvml_wrapper::error::NvmlError| format!("NVML {what}: {err}");
    Ok(Telemetry {
        name: d.name().map_err(|x| e("name", x))?,
        sm_clock_mhz: d.clock_info(Clock::SM).map_err(|x| e("SM clock", x))?,
        max_sm_clock_mhz: d.max_clock_info(Clock::SM).map_err(|x| e("max SM clock", x))?,
        memory_clock_mhz: d.clock_info(Clock::Memory).map_err(|x| e("memory clock", x))?,
        max_memory_clock_mhz: d.max_clock_info(Clock::Memory).map_err(|x| e("max memory clock", x))?,
        power_watts: d.power_usage().map_err(|x| e("power", x))? as f64 / 1e3,
        power_limit_watts: d.enforced_power_limit().map_err(|x| e("power limit", x))? as f64 / 1e3,
        temperature_c: d.temperature(TemperatureSensor::Gpu).map_err(|x| e("temperature", x))?,
        throttle_reasons: d
            .current_throttle_reasons()
            .map_err(|x| e("throttle reasons", x))?
            .iter_names()
            .map(|(name, _)| name.to_string())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_in_nvml_form() {
        let b: [u8; 16] = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        assert_eq!(super::nvml_uuid(&b), "GPU-12345678-9abc-def0-0123-456789abcdef");
    }
}
