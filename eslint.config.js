// Lint: ESLint's and typescript-eslint's recommended rules, type-aware (floating promises, misused
// promises, unsafe any), plus the house rules from shared/style.md. Formatting is Prettier's job.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/node_modules/**', 'tmp/**', '.edgemesh-demo/**', 'dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['eslint.config.js', 'docs/upstream/*.mjs'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      'no-empty': ['error', { allowEmptyCatch: false }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      // Errors from JSON, gRPC and child processes arrive untyped; they are checked where used.
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      // A promise nobody handles is an agent that dies on its first rejection: `void` does not
      // excuse one; handle it (.catch) or await it.
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: false }],
    },
  },
  {
    // A periodic task survives its own errors: a throw in a bare setInterval callback kills the
    // process. The agent's periodic work goes through every() (agent/src/time/every.ts).
    files: ['agent/src/**/*.ts', 'operator/src/**/*.ts'],
    ignores: ['**/*.test.ts', 'agent/src/time/every.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        ...[
          "CallExpression[callee.name='setInterval']",
          "CallExpression[callee.property.name='setInterval']", // globalThis.setInterval, timers.setInterval
          "ImportSpecifier[imported.name='setInterval']", // import { setInterval as tick } from 'node:timers'
        ].map((selector) => ({
          selector,
          message:
            'a round that throws would kill the process: in the agent use every() (agent/src/time/every.ts); elsewhere catch inside the round',
        })),
      ],
    },
  },
  {
    files: ['**/*.test.ts'],
    rules: {
      // node:test's describe/it return promises the runner awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'it', 'test'] },
          ],
        },
      ],
    },
  },
);
