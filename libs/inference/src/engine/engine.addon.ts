import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { projectRoot } from '@app/common';

/**
 * The engine addon's functions (libs/inference/native, built by `npm ci`). Each takes
 * node-llama-cpp's native context object (`LlamaContext._ctx`) and checks its layout first.
 */
export interface EngineAddon {
  /** Layout and symbol check; throws when this addon cannot drive that context. */
  probe(context: object): { contextSize: number; threads: number; libraries: string[] };
  /**
   * Attaches persistent ggml threadpools of up to `threads` (`poll`: ggml's busy-wait level
   * 0..100). The first call also starts `samplingThreads` threads (process-wide) that sample a
   * step's slots in parallel.
   */
  attachThreadpool(context: object, threads: number, poll: number, samplingThreads?: number): void;
  /** Detaches and frees it; call before the context is disposed. */
  detachThreadpool(context: object): boolean;
  /** Threads of the next decode calls (capped at the pool's size). */
  setThreads(context: object, generation: number, batch?: number): void;
  /**
   * One scheduler step: `spec` lists items as [sequence, firstPosition, tokenCount, sample 0|1,
   * ...tokens] (the first `specLength` entries are read); the k-th sampling item is sampled with
   * `samplers[k]` (node-llama-cpp AddonSampler objects) into `out[k]` (-1 = no token). Resolves
   * with the ms llama_decode took. With `top` (one entry per sampling item: -1 = none, else
   * 0..20), the item's raw log-probabilities: the sampled token's in `lpValues[k * 21]`, the best
   * `top[k]` tokens in `lpTokens[k * 20 + i]` / `lpValues[k * 21 + 1 + i]`. `info[0]`, when
   * given: the throwaway tokens the step carried to close holes (setGapFill; builds before it
   * leave it as it was) or pad it (setDecodePad); `info[1]`, when there: 1 when the step ran as
   * one decode per token (setDecodeSplit); `info[2]`, when there: the width the step was padded
   * to, 0 = none (setDecodePad).
   */
  step(
    context: object,
    spec: Int32Array,
    samplers: readonly object[],
    out: Int32Array,
    specLength?: number,
    top?: Int32Array,
    lpTokens?: Int32Array,
    lpValues?: Float32Array,
    info?: Int32Array,
  ): Promise<number>;
  /** Frees what step() allocated for the context; call before disposing it. */
  release(context: object): boolean;
  /**
   * Steps back to back on the addon's worker thread (llama.cpp's server loop): the first step is
   * `spec` as in step(); after each one, every sampling item whose slot goes on becomes a
   * one-token item of the next step with the token just sampled. `plan` holds [budget,
   * stopOnEog 0|1] per sampling item (budget: tokens it may still sample, this step's included).
   * `onStep(layout, computeMs, threads, doneAt, final, lpTokens?, lpValues?, filled?, held?, split?, padTo?)` runs on the main
   * thread for each step in order while the next computes: layout is [sequence, firstPosition,
   * tokenCount, sampled] per item (sampled -1 = none, -2 = the item did not sample), doneAt the
   * step's end on the monotonic clock in ms, final true on the run's last step when the run knew
   * it then (the context is already free: the next run may start from onStep), filled the
   * throwaway tokens the step carried (setGapFill, setDecodePad), held the generating items the
   * step left to the next one because it took a prompt in alone (setPromptAlone; they are not in
   * its layout and still go on), split true when the step ran as one decode per token
   * (setDecodeSplit), padTo the width it was padded to, 0 = none (setDecodePad).
   * Ends when no item
   * goes on, after a step with a non-sampling item, or after interrupt(); resolves with the
   * number of steps. Absent from builds before it existed (the server then steps one call at a
   * time).
   */
  run?(
    context: object,
    spec: Int32Array,
    samplers: readonly object[],
    plan: Int32Array,
    onStep: (
      layout: Int32Array,
      computeMs: number,
      threads: number,
      doneAt: number,
      final: boolean,
      lpTokens?: Int32Array,
      lpValues?: Float32Array,
      filled?: number,
      held?: number,
      split?: boolean,
      padTo?: number,
    ) => void,
    specLength?: number,
    top?: Int32Array,
  ): Promise<number>;
  /**
   * Process-wide: a step fills each hole of at most `maxRun` idle sequences between busy ones
   * with a throwaway token per idle sequence (no logits, its cell removed right after the
   * decode), so that llama.cpp does not split the step at the hole (one micro-batch per run of
   * consecutive sequence ids with per-sequence KV streams). 0 = never; the addon's default is 1.
   * Plain attention caches only (not recurrent, hybrid or sliding-window models). Returns the
   * throwaway tokens added so far. Absent from builds before it existed.
   */
  setGapFill?(maxRun?: number): number;
  /**
   * The context's next run() calls: a step that takes in a fed prompt of two tokens or more
   * leaves the run's generating items to the next step (not right after a step that evaluated a
   * prompt), so that the prompt's first token comes one decode pass sooner; with per-sequence
   * KV streams llama.cpp evaluates such a step as two passes anyway (the decode tokens with the
   * prompt's first, then the rest of the prompt). Default off; release() forgets it. Returns the
   * context's setting. Absent from builds before it existed.
   */
  setPromptAlone?(context: object, on?: boolean): boolean;
  setDrainPack?(context: object, on?: boolean): boolean;
  /**
   * The text of tokens[contextCount, contextCount + count) after the context tokens before them,
   * exactly as node-llama-cpp's LlamaModel.detokenize(tokens, special, context) makes it, in one
   * call; null where it could differ (the caller then asks node-llama-cpp). Absent from builds
   * before it existed.
   */
  detokenizeAfter?(context: object, tokens: Int32Array, contextCount: number, count: number, special: boolean): string | null;
  /**
   * The context's next steps (a run in flight from its next step) run a small decode step (two
   * to four items of one token, each sampling) as one llama_decode per token: on CPUs ggml's
   * one-token kernels can cost less than its batched ones for a few tokens (see the thread
   * policy's split variants). Each step reports whether it split. Default off; false, and
   * nothing set, without an attached threadpool. Absent from builds before it existed.
   */
  setDecodeSplit?(context: object, on?: boolean): boolean;
  /**
   * The context's next steps (a run in flight from its next step) pad a decode step of more than
   * `width` / 2 items and fewer than `width` tokens (one run of sequences once its holes are
   * filled) to `width`, with throwaway tokens on the idle sequences next to the run (after its
   * last, then before its first; all or none), each with logits nobody reads and its cell removed
   * after the decode: on some CPUs ggml takes 8 columns in less time than 5 to 7 (see the thread
   * policy's pad variants). 0 = never (default); returns the setting, 0 without an attached
   * threadpool. Absent from builds before it existed.
   */
  setDecodePad?(context: object, width?: number): number;
  /** A run in flight on the context stops after its current step. */
  interrupt?(context: object): void;
  /**
   * Hands the run in flight whole prompts (`spec` as in step(), every item sampling; `plan` and
   * `top` as in run()): the loop takes them in at its next step boundaries, oldest first, as many
   * a step as fit within `pack` prompt tokens (the first always goes) and the batch, after
   * dropping each slot's KV cells from the item's position on; each then goes on as the run's
   * other items. False when no run is in flight or it has decided to end (nothing was taken).
   * A prompt fed and never reported was not evaluated, and its slot's cells from its position on
   * may or may not have been dropped. Absent from builds before it existed.
   */
  feed?(context: object, spec: Int32Array, samplers: readonly object[], plan: Int32Array, pack: number, specLength?: number, top?: Int32Array): boolean;
}

/** Where `npm ci` (scripts/build-native.js) puts the addon. */
export const DEFAULT_ENGINE_ADDON_PATH = join(projectRoot(), 'libs', 'inference', 'native', 'build', 'Release', 'llm_engine.node');

export type EngineAddonLoad = { readonly addon: EngineAddon; readonly path: string } | { readonly addon: null; readonly reason: string };

/** Loads the addon, or says why not (missing, wrong platform, failed to load): never throws. */
export function loadEngineAddon(path: string = DEFAULT_ENGINE_ADDON_PATH): EngineAddonLoad {
  if (!existsSync(path)) return { addon: null, reason: `engine addon not built (${path} is missing; run \`node scripts/build-native.js\`)` };
  try {
    const addon = createRequire(__filename)(path) as EngineAddon;
    for (const fn of ['probe', 'attachThreadpool', 'detachThreadpool', 'setThreads', 'step', 'release'] as const) {
      if (typeof addon[fn] !== 'function') return { addon: null, reason: `engine addon at ${path} has no ${fn}()` };
    }
    return { addon, path };
  } catch (err) {
    return { addon: null, reason: `engine addon at ${path} failed to load: ${(err as Error).message.split('\n')[0]}` };
  }
}
