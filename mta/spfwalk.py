# -*- test-case-name: tests.test_dnsdoctor -*-
"""
SPF as a sender sees it, for C{mta dns}: would a receiver's check of mail
from this server pass, and how many DNS lookups does the record cost.

L{evaluateSPF} runs RFC 7208's C{check_host()} (sections 4 and 5: C{ip4},
C{ip6}, C{a}, C{mx}, C{ptr}, C{include}, C{exists}, C{redirect} and
macros) for one address through an L{IDNSResolver}, on the reactor, with
no thread; L{countSPFLookups} counts the lookups through every include,
for any sender, as receivers stop at L{SPF_LOOKUP_LIMIT}.  Inbound mail is
checked by pyspf (L{mta.policy.spf}); this walk answers the other
question, about our own record.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from mta.dns import DNSError, DNSNameError, DNSTemporaryError
from mta.interfaces import IDNSResolver

#: The most DNS lookups an SPF evaluation may cause (RFC 7208 4.6.4).
SPF_LOOKUP_LIMIT = 10
#: The most lookups that may find nothing (RFC 7208 4.6.4).
SPF_VOID_LIMIT = 2


def decodeTXT(record: bytes) -> str:
    return record.decode("utf-8", "replace")


def dnsReason(error: DNSError) -> str:
    return f"DNS {error.rrtype} lookup of {error.name} failed: {error.reason}"


class SPFPermError(Exception):
    """
    The SPF record cannot be evaluated (RFC 7208 permerror); the message
    says why.
    """


class SPFTempError(Exception):
    """
    A DNS lookup failed for now (RFC 7208 temperror); the message says
    which.
    """


def isSPF(text: str) -> bool:
    """
    @return: whether C{text} is an SPF record (RFC 7208 4.5: C{v=spf1}
        alone or followed by a space).
    """
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


_MODIFIER = re.compile(r"^([a-zA-Z][a-zA-Z0-9_.-]*)=(.*)$")
_MACRO = re.compile(r"%(?:\{([a-zA-Z])(\d*)(r?)([.\-+,/_=]*)\}|(.))")
_DUAL_CIDR = re.compile(r"^(.*?)(?:/(\d+))?(?://(\d+))?$")
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


def _splitMechanism(term: str) -> tuple[str, str]:
    """
    @return: a mechanism's name, lower-case, and what follows it
        (C{":domain"}, C{"/24"}, ...).
    """
    end = 0
    while end < len(term) and term[end].isascii() and term[end].isalnum():
        end += 1
    return term[:end].lower(), term[end:]


class SPFEvaluation:
    """
    One C{check_host()} (RFC 7208 section 4) for an address, with its
    lookup and void-lookup counts.
    """

    def __init__(self, resolver: IDNSResolver, ip: str, sender: str, helo: str) -> None:
        self.resolver = resolver
        self.ip = ipaddress.ip_address(ip)
        self.sender = sender
        self.helo = helo
        self.lookups = 0
        self.voids = 0

    def expand(self, spec: str, domain: str) -> str:
        """
        Expand the macros of a domain-spec (RFC 7208 section 7).

        @raise SPFPermError: a macro is malformed.
        """

        def one(match: re.Match[str]) -> str:
            letter, digits, reverse, delimiters, literal = match.groups()
            if literal is not None:
                special = {"%": "%", "_": " ", "-": "%20"}
                if literal not in special:
                    raise SPFPermError(f"bad macro %{literal} in {spec!r}")
                return special[literal]
            value = self._macro(letter.lower(), domain, spec)
            parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                if int(digits) == 0:
                    raise SPFPermError(f"bad macro in {spec!r}")
                parts = parts[-int(digits) :]
            return ".".join(parts)

        if "%" not in spec:
            return spec
        return _MACRO.sub(one, spec)

    def _macro(self, letter: str, domain: str, spec: str) -> str:
        local, _, senderDomain = self.sender.rpartition("@")
        if self.ip.version == 4:
            ipText = str(self.ip)
        else:
            ipText = ".".join(self.ip.exploded.replace(":", ""))
        values = {
            "s": self.sender,
            "l": local or "postmaster",
            "o": senderDomain,
            "d": domain,
            "i": ipText,
            "p": "unknown",
            "v": "in-addr" if self.ip.version == 4 else "ip6",
            "h": self.helo,
        }
        if letter not in values:
            raise SPFPermError(f"bad macro letter {letter!r} in {spec!r}")
        return values[letter]

    def count(self) -> None:
        """
        Count one DNS-querying term.

        @raise SPFPermError: over L{SPF_LOOKUP_LIMIT}.
        """
        self.lookups += 1
        if self.lookups > SPF_LOOKUP_LIMIT:
            raise SPFPermError(f"more than {SPF_LOOKUP_LIMIT} DNS lookups")

    def void(self) -> None:
        """
        Count one lookup that found nothing.

        @raise SPFPermError: over L{SPF_VOID_LIMIT}.
        """
        self.voids += 1
        if self.voids > SPF_VOID_LIMIT:
            raise SPFPermError(f"more than {SPF_VOID_LIMIT} lookups found nothing")

    async def addresses(self, host: str, family: str | None = None) -> list[str]:
        """
        @param family: C{"ipv4"} or C{"ipv6"}; by default our address's.
        @return: C{host}'s addresses of that family; a void lookup when
            there are none.
        @raise SPFTempError: DNS did not answer.
        """
        if family is None:
            family = "ipv4" if self.ip.version == 4 else "ipv6"
        try:
            found = await self.resolver.lookupAddresses(host, family)
        except DNSNameError:
            found = []
        except DNSTemporaryError as e:
            raise SPFTempError(dnsReason(e)) from None
        if not found:
            self.void()
        return found

    def within(self, addresses: Sequence[str], cidr4: str | None, cidr6: str | None) -> bool:
        """
        @return: whether our address is in one of C{addresses}' networks.
        """
        length = cidr4 if self.ip.version == 4 else cidr6
        for address in addresses:
            prefix = address if length is None else f"{address}/{length}"
            try:
                network = ipaddress.ip_network(prefix, strict=False)
            except ValueError:
                raise SPFPermError(f"bad CIDR length /{length}") from None
            if self.ip in network:
                return True
        return False

    async def checkHost(self, domain: str, depth: int = 0) -> str:
        """
        Evaluate C{domain}'s SPF record for our address.

        @return: C{"pass"}, C{"fail"}, C{"softfail"}, C{"neutral"} or
            C{"none"}.
        @raise SPFPermError: the record cannot be evaluated.
        @raise SPFTempError: DNS did not answer.
        """
        if depth > SPF_LOOKUP_LIMIT:
            raise SPFPermError("include/redirect loop")
        try:
            txt = await self.resolver.lookupTXT(domain)
        except DNSNameError:
            return "none"
        except DNSTemporaryError as e:
            raise SPFTempError(dnsReason(e)) from None
        records = [r for r in map(decodeTXT, txt) if isSPF(r)]
        if not records:
            return "none"
        if len(records) > 1:
            raise SPFPermError(f"{domain} has {len(records)} SPF records")
        redirect = None
        for term in records[0].split()[1:]:
            modifier = _MODIFIER.match(term)
            if modifier is not None:
                name, value = modifier.group(1).lower(), modifier.group(2)
                if name == "redirect":
                    if redirect is not None:
                        raise SPFPermError(f"{domain}: two redirect= modifiers")
                    redirect = value
                continue
            qualifier = _QUALIFIERS.get(term[0])
            if qualifier is None:
                qualifier = "pass"
            else:
                term = term[1:]
            if await self.mechanism(term, domain, depth):
                return qualifier
        if redirect is None:
            return "neutral"
        self.count()
        result = await self.checkHost(self.expand(redirect, domain), depth + 1)
        if result == "none":
            raise SPFPermError(f"redirect={redirect}: no SPF record there")
        return result

    def target(self, argument: str, domain: str, required: bool, term: str) -> str:
        """
        @param argument: what follows the mechanism's name: C{""} or
            C{":domain-spec"}, without any CIDR suffix.
        @return: the expanded domain the mechanism is about.
        @raise SPFPermError: it is missing where required, or malformed.
        """
        if not argument:
            if required:
                raise SPFPermError(f"{term!r} needs a domain")
            return domain
        if not argument.startswith(":") or len(argument) == 1:
            raise SPFPermError(f"malformed term {term!r}")
        return self.expand(argument[1:], domain).rstrip(".")

    async def mechanism(self, term: str, domain: str, depth: int) -> bool:
        """
        @return: whether mechanism C{term} (without its qualifier) matches
            our address.
        @raise SPFPermError: the term is malformed, or a limit is passed.
        @raise SPFTempError: DNS did not answer.
        """
        name, rest = _splitMechanism(term)
        if name == "all":
            if rest:
                raise SPFPermError(f"malformed term {term!r}")
            return True
        if name in ("ip4", "ip6"):
            if not rest.startswith(":"):
                raise SPFPermError(f"malformed term {term!r}")
            try:
                network = ipaddress.ip_network(rest[1:], strict=False)
            except ValueError:
                raise SPFPermError(f"malformed term {term!r}") from None
            if network.version != int(name[-1]):
                raise SPFPermError(f"malformed term {term!r}")
            return self.ip in network
        if name in ("a", "mx"):
            cidr = _DUAL_CIDR.fullmatch(rest)
            if cidr is None:
                raise SPFPermError(f"malformed term {term!r}")
            spec, cidr4, cidr6 = cidr.groups()
            host = self.target(spec, domain, False, term)
            self.count()
            if name == "a":
                return self.within(await self.addresses(host), cidr4, cidr6)
            return await self.mxMatches(host, cidr4, cidr6)
        if name == "ptr":
            host = self.target(rest, domain, False, term)
            self.count()
            return await self.ptrMatches(host)
        if name in ("include", "exists"):
            host = self.target(rest, domain, True, term)
            self.count()
            if name == "exists":
                # An A lookup whatever our address's family (RFC 7208 5.7).
                return bool(await self.addresses(host, "ipv4"))
            result = await self.checkHost(host, depth + 1)
            if result == "none":
                raise SPFPermError(f"include:{host}: no SPF record there")
            return result == "pass"
        raise SPFPermError(f"unknown mechanism {term!r}")

    async def mxMatches(self, host: str, cidr4: str | None, cidr6: str | None) -> bool:
        """
        @return: whether our address is one of C{host}'s MX hosts'.
        """
        try:
            mxs = await self.resolver.lookupMX(host)
        except DNSNameError:
            mxs = []
        except DNSTemporaryError as e:
            raise SPFTempError(dnsReason(e)) from None
        mxs = [mx for mx in mxs if not mx.isNull]
        if not mxs:
            self.void()
        if len(mxs) > SPF_LOOKUP_LIMIT:
            raise SPFPermError(f"mx:{host} has more than {SPF_LOOKUP_LIMIT} MX hosts")
        for mx in mxs:
            if self.within(await self.addresses(mx.exchange), cidr4, cidr6):
                return True
        return False

    async def ptrMatches(self, host: str) -> bool:
        """
        @return: whether a forward-confirmed name of our address is
            C{host} or under it.
        """
        try:
            names = await self.resolver.lookupPTR(str(self.ip))
        except DNSNameError:
            names = []
        except DNSTemporaryError as e:
            raise SPFTempError(dnsReason(e)) from None
        if not names:
            self.void()
        for name in names[:SPF_LOOKUP_LIMIT]:
            if name == host or name.endswith("." + host):
                try:
                    if str(self.ip) in await self.resolver.lookupAddresses(name):
                        return True
                except DNSError:
                    continue
        return False


async def countSPFLookups(
    resolver: IDNSResolver, domain: str, evaluation: SPFEvaluation, depth: int = 0
) -> int:
    """
    Count the DNS lookups C{domain}'s SPF record can cost a receiver,
    whatever the sender's address: every C{a}, C{mx}, C{ptr}, C{exists},
    C{include} and C{redirect} term, through every include.

    @param evaluation: expands the macros.
    @raise SPFTempError: DNS did not answer.
    """
    if depth > SPF_LOOKUP_LIMIT:
        return 0
    try:
        txt = await resolver.lookupTXT(domain)
    except DNSNameError:
        return 0
    except DNSTemporaryError as e:
        raise SPFTempError(dnsReason(e)) from None
    records = [r for r in map(decodeTXT, txt) if isSPF(r)]
    if len(records) != 1:
        return 0
    terms = records[0].split()[1:]
    total = 0
    hasAll = any(t.lstrip("+-~?").lower() == "all" for t in terms)
    for term in terms:
        modifier = _MODIFIER.match(term)
        if modifier is not None:
            if modifier.group(1).lower() == "redirect" and not hasAll:
                total += 1
                target = evaluation.expand(modifier.group(2), domain)
                total += await countSPFLookups(resolver, target, evaluation, depth + 1)
            continue
        name, rest = _splitMechanism(term.lstrip("+-~?"))
        if name in ("a", "mx", "ptr", "exists"):
            total += 1
        elif name == "include" and rest.startswith(":"):
            total += 1
            target = evaluation.expand(rest[1:], domain).rstrip(".")
            total += await countSPFLookups(resolver, target, evaluation, depth + 1)
    return total


async def evaluateSPF(
    resolver: IDNSResolver, domain: str, ip: str, hostname: str
) -> tuple[str, str]:
    """
    What a receiver's SPF check of mail from C{postmaster@domain} sent by
    us from C{ip} would say.

    @return: the result (C{"pass"}, C{"fail"}, C{"softfail"},
        C{"neutral"}, C{"none"}, C{"permerror"} or C{"temperror"}) and,
        for the errors, why.
    """
    evaluation = SPFEvaluation(resolver, ip, f"postmaster@{domain}", hostname)
    try:
        return await evaluation.checkHost(domain), ""
    except SPFPermError as e:
        return "permerror", str(e)
    except SPFTempError as e:
        return "temperror", str(e)
