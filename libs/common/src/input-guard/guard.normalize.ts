/**
 * Letters of other scripts that render like Latin ones (Unicode's confusables for the letters an
 * English instruction is written with): Cyrillic, Greek and a few Latin look-alikes NFKC keeps.
 */
const CONFUSABLES: Record<string, string> = {
  // Cyrillic
  а: 'a', в: 'b', с: 'c', е: 'e', ё: 'e', һ: 'h', і: 'i', ї: 'i', ј: 'j', к: 'k', м: 'm', н: 'h', о: 'o', р: 'p',
  ԛ: 'q', ѕ: 's', т: 't', у: 'y', ў: 'y', х: 'x', ԝ: 'w', ӏ: 'l', г: 'r', п: 'n', ь: 'b', ɡ: 'g',
  А: 'A', В: 'B', С: 'C', Е: 'E', Ё: 'E', Н: 'H', І: 'I', Ї: 'I', Ј: 'J', К: 'K', М: 'M', О: 'O', Р: 'P',
  Ѕ: 'S', Т: 'T', У: 'Y', Х: 'X', Ԝ: 'W', Ӏ: 'I', Ү: 'Y', Һ: 'H', Ԁ: 'D', Ԍ: 'G', Ԛ: 'Q',
  // Greek
  α: 'a', β: 'b', γ: 'y', ε: 'e', η: 'n', ι: 'i', κ: 'k', ν: 'v', ο: 'o', ρ: 'p', τ: 't', υ: 'u', χ: 'x', ω: 'w',
  Α: 'A', Β: 'B', Ε: 'E', Ζ: 'Z', Η: 'H', Ι: 'I', Κ: 'K', Μ: 'M', Ν: 'N', Ο: 'O', Ρ: 'P', Τ: 'T', Υ: 'Y', Χ: 'X',
  // Latin look-alikes
  ı: 'i', ȷ: 'j', ł: 'l', ø: 'o', đ: 'd', ħ: 'h', ŧ: 't', ß: 'ss', æ: 'ae', œ: 'oe',
};
const CONFUSABLE_RE = new RegExp(`[${Object.keys(CONFUSABLES).join('')}]`, 'gu');

/**
 * Invisible characters: format controls (zero-width space/joiners, word joiner, BOM, soft hyphen,
 * bidi marks and isolates, invisible operators), variation selectors, the Mongolian vowel
 * separator, combining grapheme joiner and Hangul fillers.
 */
const INVISIBLE_RE = /[\p{Cf}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180e\u3164\uffa0\ufe00-\ufe0f]|\udb40[\udd00-\uddef]/gu;
const MARKS_RE = /\p{M}+/gu;
const SPACE_RE = /[\s\p{Z}]+/gu;

/**
 * The text an input-guard pattern is matched against: NFKC (fullwidth, ligatures and other
 * compatibility forms become their plain letters), invisible characters removed, confusable
 * letters of other scripts folded to Latin, accents dropped, and every run of whitespace (line
 * breaks included) made one space. Only the guard sees it; the model gets the text as sent.
 */
export function normalizeForGuard(text: string): string {
  return text
    .normalize('NFKC')
    .replace(INVISIBLE_RE, '')
    .replace(CONFUSABLE_RE, (c) => CONFUSABLES[c] ?? c)
    .normalize('NFD')
    .replace(MARKS_RE, '')
    .replace(SPACE_RE, ' ')
    .normalize('NFC');
}
