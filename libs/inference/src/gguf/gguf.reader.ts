import { closeSync, openSync, readSync } from 'node:fs';
import { GGUF_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufType, GgufValue } from './gguf.format';

/** Where a tensor's data lies in a GGUF file. */
export interface GgufTensorInfo {
  readonly name: string;
  /** ggml order: ne0 (the contiguous dimension) first. */
  readonly dims: readonly number[];
  readonly type: GgmlType;
  /** Byte offset of its data from the start of the file. */
  readonly fileOffset: number;
}

/**
 * Reads the metadata key/values of a GGUF file (not the tensors). Small and dependency-free so
 * that tools (model synth) can copy a tokenizer without loading llama.cpp.
 */
export function readGgufMetadata(path: string): Map<string, GgufValue> {
  return readGguf(path, false).metadata;
}

/** The metadata and the tensor table (names, shapes, types, where each one's data is). */
export function readGgufTensors(path: string): { metadata: Map<string, GgufValue>; tensors: GgufTensorInfo[] } {
  return readGguf(path, true);
}

function readGguf(path: string, withTensors: boolean): { metadata: Map<string, GgufValue>; tensors: GgufTensorInfo[] } {
  const fd = openSync(path, 'r');
  let buffer = Buffer.alloc(1 << 20);
  let filled = 0;
  let pos = 0;
  const ensure = (n: number): void => {
    if (pos + n <= filled) return;
    if (pos + n > buffer.length) {
      const bigger = Buffer.alloc(Math.max(buffer.length * 2, pos + n + (1 << 20)));
      buffer.copy(bigger, 0, 0, filled);
      buffer = bigger;
    }
    while (filled < pos + n) {
      const read = readSync(fd, buffer, filled, buffer.length - filled, filled);
      if (read === 0) throw new Error(`${path}: unexpected end of file in GGUF metadata`);
      filled += read;
    }
  };
  const u32 = (): number => (ensure(4), (pos += 4), buffer.readUInt32LE(pos - 4));
  const u64 = (): bigint => (ensure(8), (pos += 8), buffer.readBigUInt64LE(pos - 8));
  const str = (): string => {
    const n = Number(u64());
    ensure(n);
    pos += n;
    return buffer.toString('utf8', pos - n, pos);
  };
  const scalar = (type: GgufType): string | number | bigint | boolean => {
    const sizes: Partial<Record<GgufType, number>> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
    if (type === GgufType.STRING) return str();
    const size = sizes[type];
    if (size === undefined) throw new Error(`${path}: unknown GGUF value type ${type}`);
    ensure(size);
    pos += size;
    const at = pos - size;
    switch (type) {
      case GgufType.UINT8: return buffer.readUInt8(at);
      case GgufType.INT8: return buffer.readInt8(at);
      case GgufType.UINT16: return buffer.readUInt16LE(at);
      case GgufType.INT16: return buffer.readInt16LE(at);
      case GgufType.UINT32: return buffer.readUInt32LE(at);
      case GgufType.INT32: return buffer.readInt32LE(at);
      case GgufType.FLOAT32: return buffer.readFloatLE(at);
      case GgufType.BOOL: return buffer.readUInt8(at) !== 0;
      case GgufType.UINT64: return buffer.readBigUInt64LE(at);
      case GgufType.INT64: return buffer.readBigInt64LE(at);
      default: return buffer.readDoubleLE(at);
    }
  };
  try {
    if (u32() !== GGUF_MAGIC) throw new Error(`${path} is not a GGUF file`);
    const version = u32();
    if (version < 2) throw new Error(`${path}: GGUF version ${version} is not supported`);
    const tensorCount = Number(u64());
    const count = Number(u64());
    const out = new Map<string, GgufValue>();
    for (let i = 0; i < count; i++) {
      const key = str();
      const type = u32() as GgufType;
      if (type === GgufType.ARRAY) {
        const itemType = u32() as GgufType;
        const n = Number(u64());
        const items: (string | number | boolean)[] = new Array(n);
        for (let j = 0; j < n; j++) {
          const v = scalar(itemType);
          items[j] = typeof v === 'bigint' ? Number(v) : v;
        }
        out.set(key, { itemType, items });
      } else {
        out.set(key, scalar(type));
      }
    }
    const tensors: GgufTensorInfo[] = [];
    if (withTensors) {
      const infos: { name: string; dims: number[]; type: GgmlType; offset: number }[] = [];
      for (let i = 0; i < tensorCount; i++) {
        const name = str();
        const nDims = u32();
        const dims = Array.from({ length: nDims }, () => Number(u64()));
        const type = u32() as GgmlType;
        infos.push({ name, dims, type, offset: Number(u64()) });
      }
      const alignment = typeof out.get('general.alignment') === 'number' ? (out.get('general.alignment') as number) : GGUF_ALIGNMENT;
      const dataStart = Math.ceil(pos / alignment) * alignment;
      for (const t of infos) tensors.push({ name: t.name, dims: t.dims, type: t.type, fileOffset: dataStart + t.offset });
    }
    return { metadata: out, tensors };
  } finally {
    closeSync(fd);
  }
}
