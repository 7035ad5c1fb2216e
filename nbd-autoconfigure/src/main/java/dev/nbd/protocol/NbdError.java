package dev.nbd.protocol;

/** Error values of the transmission phase (the spec's "Error values"). */
public enum NbdError {

	EPERM(1), EIO(5), ENOMEM(12), EINVAL(22), ENOSPC(28), EOVERFLOW(75), ENOTSUP(95), ESHUTDOWN(108);

	private final int code;

	NbdError(int code) {
		this.code = code;
	}

	public int code() {
		return this.code;
	}

}
