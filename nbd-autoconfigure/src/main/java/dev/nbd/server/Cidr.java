package dev.nbd.server;

import java.net.InetAddress;
import java.net.UnknownHostException;

/** An IPv4 or IPv6 address block ({@code 10.0.0.0/8}, {@code ::1/128}, or a single address). */
public final class Cidr {

	private final byte[] network;

	private final int prefix;

	private final String text;

	private Cidr(byte[] network, int prefix, String text) {
		this.network = network;
		this.prefix = prefix;
		this.text = text;
	}

	public static Cidr parse(String text) {
		String s = text.trim();
		int slash = s.indexOf('/');
		String host = (slash >= 0) ? s.substring(0, slash) : s;
		if (!host.matches("[0-9a-fA-F:.]+")) {
			// Refuse names: resolving DNS here would make the allow-list depend on DNS.
			throw new IllegalArgumentException("not an IP address or CIDR block: '" + text + "'");
		}
		byte[] address;
		try {
			address = InetAddress.getByName(host).getAddress();
		}
		catch (UnknownHostException ex) {
			throw new IllegalArgumentException("not an IP address or CIDR block: '" + text + "'", ex);
		}
		int prefix = address.length * 8;
		if (slash >= 0) {
			try {
				prefix = Integer.parseInt(s.substring(slash + 1));
			}
			catch (NumberFormatException ex) {
				throw new IllegalArgumentException("bad prefix length in '" + text + "'", ex);
			}
			if (prefix < 0 || prefix > address.length * 8) {
				throw new IllegalArgumentException("prefix length out of range in '" + text + "'");
			}
		}
		return new Cidr(address, prefix, s);
	}

	public boolean contains(InetAddress address) {
		byte[] a = address.getAddress();
		if (a.length != this.network.length) {
			// IPv4-mapped IPv6 addresses are compared as IPv4.
			if (a.length == 16 && this.network.length == 4 && isMapped(a)) {
				a = java.util.Arrays.copyOfRange(a, 12, 16);
			}
			else {
				return false;
			}
		}
		int full = this.prefix / 8;
		for (int i = 0; i < full; i++) {
			if (a[i] != this.network[i]) {
				return false;
			}
		}
		int rest = this.prefix % 8;
		if (rest == 0) {
			return true;
		}
		int mask = (0xff << (8 - rest)) & 0xff;
		return (a[full] & mask) == (this.network[full] & mask);
	}

	private static boolean isMapped(byte[] a) {
		for (int i = 0; i < 10; i++) {
			if (a[i] != 0) {
				return false;
			}
		}
		return a[10] == (byte) 0xff && a[11] == (byte) 0xff;
	}

	@Override
	public String toString() {
		return this.text;
	}

}
