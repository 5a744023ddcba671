// Applied before the page is drawn (a classic script in <head>), so a dark theme chosen with
// the switch does not flash light first. The switch itself is in app.js.
try {
  const theme = localStorage.getItem("syncd.theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch (error) {
  // Storage disabled: follow the system.
}
