package main

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
)

// caller is the identity simulate decides a request for.
type caller struct {
	name   string
	uid    uint32
	groups []string // nil unless looked up
}

// userLookup resolves a user name or a uid to an account of this machine.
type userLookup func(name, uid string) (*caller, error)

// lookupUser reads the account through os/user: the name when name is
// set, otherwise the uid; the groups' names come with it.
func lookupUser(name, uid string) (*caller, error) {
	var u *user.User
	var err error
	if name != "" {
		u, err = user.Lookup(name)
	} else {
		u, err = user.LookupId(uid)
	}
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s has uid %q: %w", u.Username, u.Uid, err)
	}
	c := &caller{name: u.Username, uid: uint32(id)}
	gids, _ := u.GroupIds()
	for _, gid := range gids {
		if g, err := user.LookupGroupId(gid); err == nil {
			c.groups = append(c.groups, g.Name)
		}
	}
	return c, nil
}

// errUnresolved is returned when the caller's uid cannot be told.
var errUnresolved = errors.New("cannot tell the caller's uid")

// resolveCaller turns --user and --uid into the caller. Both given: taken
// as they are. --user alone: resolved on this machine, and refused when
// this machine does not know the name, since the uid decides the elevated
// privilege and guessing 0 would allow what root may. --uid alone: the
// name is looked up, and required when this machine has none.
func resolveCaller(name string, nameSet bool, uid uint32, uidSet bool, lookup userLookup) (caller, error) {
	switch {
	case nameSet && uidSet:
		return caller{name: name, uid: uid}, nil
	case uidSet:
		c, err := lookup("", strconv.FormatUint(uint64(uid), 10))
		if err != nil {
			return caller{}, fmt.Errorf("%w: uid %d has no user on this machine (%v); give --user too", errUnresolved, uid, err)
		}
		return *c, nil
	}
	c, err := lookup(name, "")
	if err != nil {
		return caller{}, fmt.Errorf("%w: user %q is not a user of this machine (%v); give its uid on the VM with --uid", errUnresolved, name, err)
	}
	return *c, nil
}
