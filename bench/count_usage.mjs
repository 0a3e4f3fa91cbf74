// Count the corpus of bench/usage_corpus.py with the providers' tokenizers (npm: gpt-tokenizer,
// @anthropic-ai/tokenizer) and write, per request, its shape and the recorded counts:
//   openai: o200k_base in the chat format (3 tokens a message, 3 of reply priming: OpenAI's rule)
//   claude: Anthropic's published Claude tokenizer on the texts, 3 tokens a message of framing
// Only the shapes and counts are kept: the bench needs characters, not text.
import { encode } from 'gpt-tokenizer/encoding/o200k_base';
import { countTokens } from '@anthropic-ai/tokenizer';
import * as readline from 'node:readline';

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const r = JSON.parse(line);
  const texts = [r.system, ...r.messages.map(m => m.text)];
  const openai = 3 + texts.reduce((n, t) => n + 3 + encode(t).length, 0);
  const claude = texts.reduce((n, t) => n + 3 + countTokens(t), 0);
  // Per text: characters, extra UTF-8 bytes (non-ASCII weight), ASCII digits and punctuation:
  // what asm's estimator weighs (asm_kernel.context.tokens.weighted_length).
  const shape = t => [[...t].length, Buffer.byteLength(t, 'utf8') - t.length + (t.length - [...t].length),
                      (t.match(/[0-9!-\/:-@\[-`{-~]/g) || []).length];
  process.stdout.write(JSON.stringify({
    kind: r.kind, n: r.n, system: shape(r.system), messages: r.messages.map(m => shape(m.text)), openai, claude,
  }) + "\n");
}
