/**
 * A configuration document's contents: JSON read with JSON.parse, anything else as YAML with the
 * `yaml` library, imported only then. The operator writes the agents' files in JSON (a subset of
 * YAML), so an agent it runs never loads a YAML parser: about 0.6 MiB of an idle agent
 * (docs/deploy.md). Hand-written YAML works as ever. A document that starts like JSON but is not
 * valid JSON is read as YAML (a flow mapping is YAML too), whose error then says what is wrong. In
 * a JSON document a key given twice takes its last value, as JSON.parse does (YAML refuses it).
 */
export async function parseDocument(text: string): Promise<unknown> {
  // A byte order mark, as some editors write one, is no JSON: past it, the rest may be.
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  if (/^\s*[{[]/.test(body)) {
    try {
      return JSON.parse(body) as unknown;
    } catch {
      // not JSON after all: YAML's parser reads it, or says why it cannot
    }
  }
  // Node gives yaml's ES module (named exports); the bundle (scripts/build.ts) its CommonJS build as
  // the default export of a chunk of its own.
  const yaml: { parse?: YamlParse; default?: { parse: YamlParse } } = await import('yaml');
  const parse = yaml.parse ?? yaml.default?.parse;
  if (!parse) throw new Error('the yaml library has no parse function');
  return parse(text);
}

type YamlParse = (text: string) => unknown;
