// What the chat tests do with a page of the chat demo (examples/chat),
// written once: collect its errors, sign in, send a message.

// watchPage collects the page's uncaught errors and console errors in
// page.problems.
export function watchPage(page) {
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(m.text());
  });
  return page;
}

// signIn signs user in on page, already at the chat's URL, with the demo
// server's password for it, and waits until the lobby is joined.
export async function signIn(page, server, user) {
  await page.fill('#username', user);
  await page.fill('#password', server.users[user]);
  await page.click('#login-button');
  await page.waitForSelector('#chat-view:not([hidden])', { timeout: 15_000 });
  await page.waitForSelector('#rooms li.joined[data-ch="rooms.lobby"]', { state: 'attached' });
}

// sendText sends text from the page's message box.
export async function sendText(page, text) {
  await page.fill('#message-input', text);
  await page.press('#message-input', 'Enter');
}
