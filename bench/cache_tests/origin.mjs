// The suite's origin server on 127.0.0.1 (its own server.mjs listens on every
// address): the same four handlers, dispatched on the first path segment.
//
//   node origin.mjs SUITE_DIR [PORT]      (PORT 0 or absent: any free port)
//
// Prints "origin listening on 127.0.0.1:PORT" once bound.

import http from 'node:http'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [suiteDir, port = '0'] = process.argv.slice(2)
if (!suiteDir) {
  console.error('usage: node origin.mjs SUITE_DIR [PORT]')
  process.exit(2)
}

async function handler (name) {
  const url = pathToFileURL(path.join(suiteDir, 'server', `handle-${name}.mjs`))
  return (await import(url.href)).default
}

const handlers = {
  config: await handler('config'),
  test: await handler('test'),
  state: await handler('state')
}
const handleFile = await handler('file')

const server = http.createServer((request, response) => {
  const url = new URL(request.url, 'http://127.0.0.1/')
  const segments = url.pathname.split('/').slice(1)
  const handle = handlers[segments[0]]
  if (handle) {
    handle(segments.slice(1), request, response)
  } else {
    handleFile(url, request, response)
  }
})
server.listen(Number(port), '127.0.0.1', () => {
  console.log(`origin listening on 127.0.0.1:${server.address().port}`)
})
