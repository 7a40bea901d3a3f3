// A proxy auto-configuration file: clients that read one (browsers, operating systems) send
// their web traffic through bgfetch, and go direct when it does not answer. Serve it from any web
// server as application/x-ns-proxy-autoconfig and give its URL as the "automatic proxy
// configuration URL". Put your bgfetch host's name in place of bgfetch.example.internal.
function FindProxyForURL(url, host) {
  if (isPlainHostName(host) || dnsDomainIs(host, ".local") || host === "localhost" ||
      isInNet(host, "127.0.0.0", "255.0.0.0") || isInNet(host, "10.0.0.0", "255.0.0.0") ||
      isInNet(host, "172.16.0.0", "255.240.0.0") || isInNet(host, "192.168.0.0", "255.255.0.0")) {
    return "DIRECT";
  }
  return "PROXY bgfetch.example.internal:8080; DIRECT";
}
