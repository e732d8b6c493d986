//! Prefill: prompts appended to their sequences in chunks, several sequences in one ragged pass,
//! their last rows' logits and first tokens.

use super::*;

impl DeviceModel {
    /// Append `tokens` to the sequence in `slot` (in chunks of `prefill_chunk`), and compute the
    /// logits of the last one ([`DeviceModel::prefill_logits`]); returns its greedy token (the
    /// argmax over the real vocabulary). Synchronises once, to read that token.
    pub fn prefill(&mut self, gpu: &Gpu, slot: usize, tokens: &[u32]) -> Result<u32> {
        Ok(self.prefill_batch(gpu, &[(slot, tokens)])?[0])
    }

    /// Append tokens to several sequences at once, `(slot, tokens)` each, as ragged batches: each
    /// pass takes up to `prefill_chunk` tokens in all, from the sequences in order (a long one is
    /// continued in the next pass, as a chunked prefill), and runs every layer once for all of
    /// them (one attention launch over their pages, `attention::prefill_paged`). Returns each
    /// sequence's greedy next token, in order; row i of [`DeviceModel::prefill_logits`] holds the
    /// logits of the i-th sequence finished by the last pass. Synchronises once per pass.
    pub fn prefill_batch(&mut self, gpu: &Gpu, seqs: &[(usize, &[u32])]) -> Result<Vec<u32>> {
        for (i, &(slot, tokens)) in seqs.iter().enumerate() {
            self.check_slot(slot)?;
            embed::check_tokens(tokens, self.config.vocab_size)?;
            if tokens.is_empty() {
                return Err(bad(format!("prefill of no tokens (sequence {i}, slot {slot})")));
            }
            if seqs[..i].iter().any(|&(s, _)| s == slot) {
                return Err(bad(format!("slot {slot} appears twice in one prefill")));
            }
            let start = self.lens[slot];
            if start + tokens.len() > self.options.capacity {
                return Err(bad(format!("{} tokens after {start} in slot {slot} overflow its capacity of {}", tokens.len(), self.options.capacity)));
            }
        }
        if seqs.is_empty() {
            return Err(bad("prefill of no sequences".into()));
        }
        let mut done = vec![0usize; seqs.len()];
        let mut firsts = vec![0u32; seqs.len()];
        while done.iter().zip(seqs).any(|(&d, (_, t))| d < t.len()) {
            // One pass: (sequence index, first token, count) parts within the chunk budget.
            let mut budget = self.options.prefill_chunk;
            let mut parts = Vec::new();
            for (i, (_, tokens)) in seqs.iter().enumerate() {
                let n = (tokens.len() - done[i]).min(budget);
                if n > 0 {
                    parts.push((i, done[i], n));
                    budget -= n;
                }
            }
            let finished = self.prefill_pass(gpu, seqs, &parts, None)?;
            let chosen = self.read_prefill_tokens(gpu, finished.len())?;
            for (&i, &token) in finished.iter().zip(&chosen) {
                firsts[i] = token;
            }
            for &(i, _, n) in &parts {
                done[i] += n;
            }
        }
        Ok(firsts)
    }

    /// As [`DeviceModel::prefill`], also returning the residual stream after every attention and
    /// every layer (one synchronisation per layer; for checking, not for serving). The prompt must
    /// fit one chunk.
    pub fn prefill_traced(&mut self, gpu: &Gpu, slot: usize, tokens: &[u32]) -> Result<(u32, DeviceTrace)> {
        if tokens.len() > self.options.prefill_chunk {
            return Err(bad(format!("a traced prefill takes at most one chunk ({} tokens), got {}", self.options.prefill_chunk, tokens.len())));
        }
        self.check_slot(slot)?;
        embed::check_tokens(tokens, self.config.vocab_size)?;
        if tokens.is_empty() || self.lens[slot] + tokens.len() > self.options.capacity {
            return Err(bad(format!("a traced prefill of {} tokens after {} in slot {slot} of {}", tokens.len(), self.lens[slot], self.options.capacity)));
        }
        let mut trace = DeviceTrace::default();
        self.prefill_pass(gpu, &[(slot, tokens)], &[(0, 0, tokens.len())], Some(&mut trace))?;
        Ok((self.read_prefill_tokens(gpu, 1)?[0], trace))
    }

    /// One ragged pass: `parts` (sequence index into `seqs`, first token, count) in row order.
    /// Runs the layers over all their rows, then the head on the last row of each sequence whose
    /// tokens end in this pass; returns those sequences' indices, in the order of their logits rows.
    pub(super) fn prefill_pass(&mut self, gpu: &Gpu, seqs: &[(usize, &[u32])], parts: &[(usize, usize, usize)], mut trace: Option<&mut DeviceTrace>) -> Result<Vec<usize>> {
        let t: usize = parts.iter().map(|p| p.2).sum();
        let ids: Vec<i32> = parts.iter().flat_map(|&(i, from, n)| seqs[i].1[from..from + n].iter().map(|&x| x as i32)).collect();
        gpu.stream().memcpy_htod(&ids, &mut self.ws.tokens.slice_mut(0..t)).cuda("cuMemcpyHtoD(prefill tokens)")?;
        let meta: Vec<(usize, usize, usize)> = parts.iter().map(|&(i, _, n)| (seqs[i].0, self.lens[seqs[i].0], n)).collect();
        self.upload_prefill_meta(gpu, &meta)?;
        embed::embed(gpu, &self.embed.view(), &self.ws.tokens.slice(0..t), &mut self.ws.resid.view_mut().rows_mut(0..t)?, &mut self.embed_status)?;
        if let Some(tr) = trace.as_deref_mut() {
            tr.hidden.push(self.ws.resid.view().rows(0..t)?.to_host(gpu)?);
        }
        let max_q = parts.iter().map(|p| p.2).max().unwrap_or(1);
        for l in 0..self.layers.len() {
            self.layer(gpu, l, t, Attend::Prefill { seqs: parts.len(), max_q }, trace.as_deref_mut())?;
        }
        for &(slot, p0, n) in &meta {
            self.set_len(slot, p0 + n);
        }
        self.final_norm(gpu, t)?;
        if let Some(tr) = trace {
            tr.hidden.push(self.ws.resid.view().rows(0..t)?.to_host(gpu)?);
        }
        // The last row of each sequence that ends here, gathered to the first rows (via `proj`,
        // free after the final norm) for one lm_head GEMM.
        let mut finished = Vec::new();
        let mut end = 0;
        for &(i, from, n) in parts {
            end += n;
            if from + n == seqs[i].1.len() {
                let row = finished.len();
                let src = self.ws.xn.view().rows(end - 1..end)?;
                gpu.stream().memcpy_dtod(&src.data, &mut self.ws.proj.view_mut().rows_mut(row..row + 1)?.data).cuda("cuMemcpyDtoD(prefill last rows)")?;
                finished.push(i);
            }
        }
        let n = finished.len();
        if n > 0 {
            gpu.stream().memcpy_dtod(&self.ws.proj.view().rows(0..n)?.data, &mut self.ws.xn.view_mut().rows_mut(0..n)?.data).cuda("cuMemcpyDtoD(prefill last rows)")?;
            // Each finished sequence draws the position after its last token.
            let rows: Vec<(usize, usize)> = finished.iter().map(|&i| (seqs[i].0, self.lens[seqs[i].0])).collect();
            self.prefill_sampled = self.sampling.any(rows.iter().map(|r| r.0));
            if self.prefill_sampled {
                self.sampling.upload(gpu, false, &rows)?;
            }
            self.head(gpu, 0..n, Head::Prefill)?;
        }
        Ok(finished)
    }

    /// The pages for a ragged pass's parts, `(slot, p0, t)` each (positions p0..p0+t; a shared
    /// page written into is copied), and the pass's device metadata: positions, slots, the block
    /// table rows, the lengths p0 + t and cu_seqlens.
    pub(super) fn upload_prefill_meta(&mut self, gpu: &Gpu, parts: &[(usize, usize, usize)]) -> Result<()> {
        let (mut positions, mut slots, mut tables, mut lens, mut cu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), vec![0i32]);
        for &(slot, p0, t) in parts {
            self.cache.ensure(gpu, slot, p0, p0 + t)?;
            let pos = self.positions((p0..p0 + t).map(|p| p as i32).collect());
            // The slots follow the positions as uploaded (the planted stuck position writes there too).
            slots.extend(pos.iter().map(|&p| self.cache.slot(slot, p as usize)));
            positions.extend(pos);
            tables.extend(self.cache.table_row(slot));
            lens.push(to_i32("length", p0 + t)?);
            cu.push(cu[cu.len() - 1] + t as i32);
        }
        let (t, n) = (positions.len(), parts.len());
        let stream = gpu.stream();
        stream.memcpy_htod(&positions, &mut self.ws.positions.slice_mut(0..t)).cuda("cuMemcpyHtoD(prefill positions)")?;
        stream.memcpy_htod(&slots, &mut self.ws.slot_mapping.slice_mut(0..t)).cuda("cuMemcpyHtoD(prefill slot mapping)")?;
        stream.memcpy_htod(&tables, &mut self.ws.pre_table.slice_mut(0..tables.len())).cuda("cuMemcpyHtoD(prefill block tables)")?;
        stream.memcpy_htod(&lens, &mut self.ws.pre_len.slice_mut(0..n)).cuda("cuMemcpyHtoD(prefill lengths)")?;
        stream.memcpy_htod(&cu, &mut self.ws.pre_cu.slice_mut(0..n + 1)).cuda("cuMemcpyHtoD(prefill cu_seqlens)")?;
        Ok(())
    }
}
