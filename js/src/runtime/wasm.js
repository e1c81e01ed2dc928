/**
 * Core wasm, read just enough to cap its linear memory: V8 has no per-instance memory limit,
 * so each memory a module defines gets a maximum; a guest that allocates past it sees
 * `memory.grow` fail (its allocator then traps with `unreachable`), as in wasmtime with
 * StoreLimits.
 * @module
 */

/** @param {Uint8Array} b @param {number} i @returns {[number, number]} value and next offset */
function uleb(b, i) {
  let v = 0, shift = 0, byte;
  do {
    byte = b[i++];
    v += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  return [v, i];
}

/** @param {number} v */
function ulebBytes(v) {
  const out = [];
  do {
    let byte = v % 128;
    v = Math.floor(v / 128);
    if (v) byte |= 0x80;
    out.push(byte);
  } while (v);
  return out;
}

/**
 * The module with every memory it defines capped at `maxPages` 64 KiB pages (a smaller
 * maximum of its own is kept).
 * @param {Uint8Array} bytes
 * @param {number} maxPages
 */
export function capMemory(bytes, maxPages) {
  if (bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw new Error('not a core wasm module');
  }
  /** @type {Uint8Array[]} */
  const parts = [bytes.subarray(0, 8)];
  let i = 8;
  while (i < bytes.length) {
    const id = bytes[i];
    const [size, start] = uleb(bytes, i + 1);
    const end = start + size;
    if (id !== 5) {
      parts.push(bytes.subarray(i, end));
      i = end;
      continue;
    }
    let [count, j] = uleb(bytes, start);
    const body = [...ulebBytes(count)];
    for (let k = 0; k < count; k++) {
      const flags = bytes[j++];
      if (flags & ~1) throw new Error(`memory flags ${flags} (shared or 64-bit) are not supported`);
      let min, max;
      [min, j] = uleb(bytes, j);
      if (flags & 1) [max, j] = uleb(bytes, j);
      const cap = Math.max(min, Math.min(max ?? Infinity, maxPages));
      body.push(1, ...ulebBytes(min), ...ulebBytes(cap));
    }
    parts.push(Uint8Array.from([5, ...ulebBytes(body.length), ...body]));
    i = end;
  }
  return Buffer.concat(parts);
}
