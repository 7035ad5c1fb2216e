package dev.nbd.server;

import java.net.InetAddress;
import java.util.Arrays;

import io.netty.util.NetUtil;

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

	/**
	 * Parses an IP literal with an optional prefix length. Host names are refused, never
	 * resolved: an allow-list must not depend on DNS (a lookup at startup could block, and its
	 * answer could be spoofed or change later).
	 */
	public static Cidr parse(String text) {
		String s = text.trim();
		int slash = s.indexOf('/');
		String host = (slash >= 0) ? s.substring(0, slash) : s;
		// A literal parser only: InetAddress.getByName would look up anything it cannot parse.
		byte[] address = NetUtil.createByteArrayFromIpAddressString(host);
		if (address == null) {
			throw new IllegalArgumentException("not an IP address or CIDR block: '" + text
					+ "' (host names are not accepted; use IPv4 or IPv6 literals such as 10.0.0.0/8 or fd00::/8)");
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
		if (address.length == 16 && isMapped(address)) {
			// An IPv4-mapped block (::ffff:10.0.0.0/104) is kept as the IPv4 block it names.
			if (prefix < 96) {
				throw new IllegalArgumentException("prefix length of an IPv4-mapped address must be 96 to 128 in '"
						+ text + "'");
			}
			address = Arrays.copyOfRange(address, 12, 16);
			prefix -= 96;
		}
		return new Cidr(address, prefix, s);
	}

	public boolean contains(InetAddress address) {
		byte[] a = address.getAddress();
		if (a.length != this.network.length) {
			// IPv4-mapped IPv6 addresses are compared as IPv4.
			if (a.length == 16 && this.network.length == 4 && isMapped(a)) {
				a = Arrays.copyOfRange(a, 12, 16);
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
