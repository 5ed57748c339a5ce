// Drives the http-cache-tests client headless, as its cli.mjs does, but
// writes JSON to a file and can run a chosen subset.
//
//   node suite.mjs list SUITE_DIR OUT.json
//       the test definitions: id, suite, name, kind, depends_on, browser_only
//   node suite.mjs run SUITE_DIR BASE_URL OUT.json DEADLINE [TEST_ID ...]
//       runs the tests (all of them, or the ids given) against BASE_URL
//       (no trailing slash) and writes {test id: true | [error, message]};
//       after DEADLINE seconds it writes the results it has and exits 3
//       (the tests still running have none)

import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const [mode, suiteDir, ...rest] = process.argv.slice(2)

async function load (relative) {
  return import(pathToFileURL(path.join(suiteDir, relative)).href)
}

// The suites cli.mjs runs: tests/index.mjs plus Surrogate-Control.
async function suites () {
  const all = [...(await load('tests/index.mjs')).default]
  all.push((await load('tests/surrogate-control.mjs')).default)
  return all
}

if (mode === 'list') {
  const [out] = rest
  const tests = []
  for (const suite of await suites()) {
    for (const test of suite.tests) {
      tests.push({
        id: test.id,
        suite: suite.id,
        name: test.name,
        kind: test.kind || 'required',
        depends_on: test.depends_on || [],
        browser_only: test.browser_only === true
      })
    }
  }
  fs.writeFileSync(out, JSON.stringify(tests, null, 1))
} else if (mode === 'run') {
  const [base, out, deadline, ...ids] = rest
  // node-fetch as the suite's own CLI uses it, resolved from the suite.
  const require = createRequire(path.join(suiteDir, 'package.json'))
  const fetch = (await import(pathToFileURL(require.resolve('node-fetch')).href)).default
  const { runTests, getResults } = await load('client/runner.mjs')
  let selected = await suites()
  if (ids.length) {
    const wanted = new Set(ids)
    selected = selected
      .map(suite => ({ ...suite, tests: suite.tests.filter(test => wanted.has(test.id)) }))
      .filter(suite => suite.tests.length)
  }
  const write = () => fs.writeFileSync(out, JSON.stringify(getResults(), null, 1))
  const timer = setTimeout(() => {
    write()
    process.exit(3)
  }, Number(deadline) * 1000)
  await runTests(selected, fetch, false, base)
  clearTimeout(timer)
  write()
} else {
  console.error('usage: node suite.mjs list SUITE_DIR OUT.json | run SUITE_DIR BASE_URL OUT.json DEADLINE [ID ...]')
  process.exit(2)
}
